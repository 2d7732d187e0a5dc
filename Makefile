# Everyday tasks. `make help` lists them. ENV selects the environment (dev).
ENV ?= dev
# kubectl refuses to follow more log streams than this (pods x containers).
MAX_LOG_STREAMS ?= 100
PYTHON := .venv/bin/python
# One pytest worker per core (pytest-xdist); PYTEST_JOBS= runs in one process.
PYTEST_JOBS ?= -n auto --dist worksteal
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
# cdk8s-cli's npm upgrade check prints a stack trace offline; .npmrc turns it
# off for a bare `npx cdk8s synth`, this for npm versions that ignore node-options.
export CDK8S_CHECK_UPGRADE := false

# The kind cluster of kind/cluster.yaml. dev always talks to it; other envs
# use your current kubectl context (or CONTEXT=...).
CLUSTER := vibearena
CONTEXT ?= $(if $(filter dev,$(ENV)),kind-$(CLUSTER))
KUBECTL = kubectl$(if $(CONTEXT), --context $(CONTEXT))
# Evaluated only by the targets that use them (profile reads cost ~0.2 s).
NS = $(shell $(PYTHON) kind/devenv.py namespace $(ENV))
SMOKE = $(PYTHON) scripts/smoke.py --env $(ENV)$(if $(CONTEXT), --context $(CONTEXT))
STAMP := $(shell date +%s)
# make logs C=api: one component's pods (their app.kubernetes.io/name).
C ?=
LOG_SELECTOR = $(if $(C),app.kubernetes.io/name=$(C),app.kubernetes.io/part-of=vibearena)
SHELL_SCRIPTS = $(wildcard scripts/*.sh kind/*.sh backup/bin/*)

.DEFAULT_GOAL := help
.PHONY: help setup synth render preview test test-runtime lint imports bench up down logs rebuild diff secrets \
	certs migrate createsuperuser grafana minio-console backup-now restore smoke topology footprint plan validate bench-backup \
	promote

help: ## List the tasks
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## Install what rendering needs (venv, cdk8s CLI)
	@bash scripts/setup.sh synth

synth: setup ## Render every env into dist/<env>/ with `cdk8s synth`
	npx --no-install cdk8s synth
	@echo "rendered: $$(ls -d dist/*/ | tr '\n' ' ')"

render: setup ## Render one env only: make render ENV=prod
	$(PYTHON) -O main.py --env $(ENV)

test: ## Install everything the tests need (pinned CRDs into .cache/crds), then run them all
	@bash scripts/setup.sh test
	@$(PYTHON) scripts/crds.py --fetch >/dev/null
	$(PYTHON) -m pytest $(PYTEST_JOBS)

test-runtime: ## Only the tests on the images' runtimes (Python 3.13, PostgreSQL 18, Valkey 9, Prometheus 3)
	@bash scripts/setup.sh test
	$(PYTHON) -m pytest -m runtime $(PYTEST_JOBS)

validate: ## Check dist/ offline: strict schemas (1.33, 1.37), CRDs, policy rules: make validate [DIRS=dist/prod]
	@bash scripts/setup.sh validate
	@$(PYTHON) scripts/crds.py --fetch >/dev/null
	$(PYTHON) scripts/validate.py $(DIRS)

lint: ## ruff, mypy and shellcheck
	@bash scripts/setup.sh test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy
	shellcheck $(SHELL_SCRIPTS)

imports: setup ## Regenerate imports/ offline (K8S_VERSION=1.33.0, CRDS_DIR=dir of the CRD files)
	$(PYTHON) scripts/gen_imports.py $(if $(K8S_VERSION),--k8s-version $(K8S_VERSION)) $(if $(CRDS_DIR),--crds-dir $(CRDS_DIR))

preview: setup ## Render the preview of a pull request: make preview PR=123 [TAG=<image tag>]
	@test -n "$(PR)" || { echo "usage: make preview PR=<pull request number> [TAG=<image tag>]" >&2; exit 2; }
	$(PYTHON) -O main.py --preview $(PR)$(if $(TAG), --image-tag $(TAG))

bench: setup ## Measure rendering speed (bench/synth.py)
	$(PYTHON) bench/synth.py

bench-backup: ## Time backup and restore on a seeded database; pass or fail against the 1.3x target
	@bash scripts/setup.sh test
	$(PYTHON) bench/backup.py

# --- the dev cluster (kind) and day-to-day operations ---------------------

up: synth ## dev on kind: cluster, ingress, cert-manager, images, secrets, TLS, apply, migrate, smoke
	bash kind/up.sh

down: ## Delete the kind cluster (keeps .env, certs/ and your source)
	bash kind/down.sh

logs: ## Follow logs of every pod, or one component: make logs C=api [ENV=stage]
	$(KUBECTL) -n $(NS) logs -l '$(LOG_SELECTOR)' --all-containers --prefix -f --max-log-requests $(MAX_LOG_STREAMS) --tail 50

rebuild: ## dev: rebuild and reload the app and backup images, restart api, workers, beat
	@test "$(ENV)" = dev || { echo "rebuild is for the kind cluster (ENV=dev); release other envs by tag" >&2; exit 2; }
	bash kind/up.sh images
	$(KUBECTL) -n $(NS) rollout restart deployment,statefulset -l 'app.kubernetes.io/component in (web,worker,scheduler)'

smoke: ## Wait for every workload, then call the API through the Ingress: make smoke ENV=stage
	$(SMOKE)

diff: setup ## Rendered diff of ENV against git HEAD, or of two envs with env names as placeholders: make diff ENV=stage OTHER=prod
	@$(PYTHON) scripts/envdiff.py $(ENV) $(OTHER)

# make plan: the deployed side is dist/$(ENV) at BASE, or a live cluster only
# when CONTEXT is given on the command line or in the environment (dev's
# default kind context above does not count).
BASE ?= origin/main
FORMAT ?= text
ACK ?=
PLAN_CONTEXT = $(if $(filter command line environment,$(origin CONTEXT)),$(CONTEXT))
plan: setup ## What applying ENV would do, classified (exit 3: risky): make plan ENV=prod [BASE=ref] [CONTEXT=ctx] [ACK='Kind/name: reason']
	$(PYTHON) scripts/plan.py --env $(ENV) --base $(BASE) --format $(FORMAT)$(if $(PLAN_CONTEXT), --context $(PLAN_CONTEXT))$(if $(ACK), --ack '$(ACK)')

# make promote: prod gets the app images stage runs, by digest (images.yml
# recorded them, cd.yml pinned stage); review and merge the change it makes.
FROM ?= stage
TO ?= prod
promote: setup ## Copy the app images FROM runs, by digest, into TO's profile: make promote [FROM=stage] [TO=prod]
	$(PYTHON) scripts/promote.py --from $(FROM) --to $(TO)

secrets: ## dev: create or update the app Secret from .env (stage/prod use External Secrets)
	@test "$(ENV)" = dev || { echo "$(ENV) reads its Secret from the secret store (env/$(ENV).yaml: secrets)" >&2; exit 2; }
	bash kind/up.sh namespace secrets

certs: ## dev: make the local CA and the TLS Secret for the dev domain
	@test "$(ENV)" = dev || { echo "$(ENV) gets certificates from cert-manager (ACME)" >&2; exit 2; }
	bash kind/up.sh namespace certs

migrate: ## Re-run the rendered migration Job and wait for it: make migrate [ENV=stage]
	$(PYTHON) kind/devenv.py migration-job $(ENV) | $(KUBECTL) replace --force -f -
	$(SMOKE) --job $$($(PYTHON) kind/devenv.py migration-job-name $(ENV)) --timeout 1800

createsuperuser: ## Create or update the Django superuser (password from the Secret) and wait
	$(KUBECTL) -n $(NS) create job --from=cronjob/createsuperuser createsuperuser-$(STAMP)
	$(SMOKE) --job createsuperuser-$(STAMP) --timeout 600

grafana: ## Open Grafana on http://localhost:3000 (port-forward; Ctrl-C ends it)
	$(KUBECTL) -n $(NS) port-forward svc/grafana 3000:3000

minio-console: ## Object store on localhost: console :9001 if the server has one, else the S3 API :9000
	@port=$$($(KUBECTL) -n $(NS) get pod minio-0 -o jsonpath='{.spec.containers[0].ports[?(@.name=="console")].containerPort}'); \
	if [ -n "$$port" ]; then echo "console: http://localhost:9001"; $(KUBECTL) -n $(NS) port-forward pod/minio-0 9001:$$port; \
	else echo "no web console in this S3 server; S3 API on http://localhost:9000 (aws --endpoint-url ...)"; \
		$(KUBECTL) -n $(NS) port-forward pod/minio-0 9000:9000; fi

backup-now: ## Run the Postgres backup now (a Job from the CronJob) and wait for it
	$(KUBECTL) -n $(NS) create job --from=cronjob/postgres-backup postgres-backup-manual-$(STAMP)
	$(SMOKE) --job postgres-backup-manual-$(STAMP) --timeout 14400

# Restores into <db>_restore, never over the live database. In place: see
# backup/README.md ("Runbook at 3 a.m."): stop the app (scale api, workers
# and beat to 0), run pg-restore with RESTORE_TARGET_DB=<db>, scale back.
restore: ## Restore the newest dump into <db>_restore (not in place) and wait
	$(KUBECTL) -n $(NS) create job --from=cronjob/postgres-restore postgres-restore-manual-$(STAMP)
	$(SMOKE) --job postgres-restore-manual-$(STAMP) --timeout 14400

topology: ## Regenerate docs/topology.md from the rendered NetworkPolicies and Ingress
	$(PYTHON) scripts/topology.py

footprint: ## Requests and limits per component and env, with totals
	$(PYTHON) bench/footprint.py
