from __future__ import annotations

from pkgutil import extend_path
__path__ = extend_path(__path__, __name__)

import abc
import builtins
import datetime
import enum
import typing

import jsii
import publication
import typing_extensions

from jsii._type_checking import cached_type_hints, check_type


from ._jsii import *

class _LazyImport:
    def __init__(self, module_name: str) -> None:
        self._module_name = module_name
        self._module: typing.Any = None
    def __getattr__(self, name: str) -> typing.Any:
        if self._module is None:
            import importlib
            self._module = importlib.import_module(self._module_name)
        return getattr(self._module, name)

if typing.TYPE_CHECKING:

    import cdk8s as _cdk8s_d3d9af27
    import constructs as _constructs_77d1e7e8
else:

    _cdk8s_d3d9af27 = _LazyImport("cdk8s")
    _constructs_77d1e7e8 = _LazyImport("constructs")


class Middleware(
    _cdk8s_d3d9af27.ApiObject,
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.Middleware",
):
    '''Middleware is the CRD implementation of a Traefik Middleware.

    More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/overview/

    :schema: Middleware
    '''

    def __init__(
        self,
        scope: "_constructs_77d1e7e8.Construct",
        id: builtins.str,
        *,
        metadata: typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]],
        spec: typing.Union["MiddlewareSpec", typing.Dict[builtins.str, typing.Any]],
    ) -> None:
        '''Defines a "Middleware" API object.

        :param scope: the scope in which to define this object.
        :param id: a scope-local name for the object.
        :param metadata: 
        :param spec: MiddlewareSpec defines the desired state of a Middleware.
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__86e418a3a27f435d4395c3dcde2a140647a024d420f38b7257072f9c6b1794ed)
            check_type(argname="argument scope", value=scope, expected_type=type_hints["scope"])
            check_type(argname="argument id", value=id, expected_type=type_hints["id"])
        props = MiddlewareProps(metadata=metadata, spec=spec)

        jsii.create(self.__class__, self, [scope, id, props])

    @jsii.member(jsii_name="manifest")
    @builtins.classmethod
    def manifest(
        cls,
        *,
        metadata: typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]],
        spec: typing.Union["MiddlewareSpec", typing.Dict[builtins.str, typing.Any]],
    ) -> typing.Any:
        '''Renders a Kubernetes manifest for "Middleware".

        This can be used to inline resource manifests inside other objects (e.g. as templates).

        :param metadata: 
        :param spec: MiddlewareSpec defines the desired state of a Middleware.
        '''
        props = MiddlewareProps(metadata=metadata, spec=spec)

        return typing.cast(typing.Any, jsii.sinvoke(cls, "manifest", [props]))

    @jsii.member(jsii_name="toJson")
    def to_json(self) -> typing.Any:
        '''Renders the object to Kubernetes JSON.'''
        return typing.cast(typing.Any, jsii.invoke(self, "toJson", []))

    @jsii.python.classproperty
    @jsii.member(jsii_name="GVK")
    def GVK(cls) -> "_cdk8s_d3d9af27.GroupVersionKind":
        '''Returns the apiVersion and kind for "Middleware".'''
        return typing.cast("_cdk8s_d3d9af27.GroupVersionKind", jsii.sget(cls, "GVK"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareProps",
    jsii_struct_bases=[],
    name_mapping={"metadata": "metadata", "spec": "spec"},
)
class MiddlewareProps:
    def __init__(
        self,
        *,
        metadata: typing.Union["_cdk8s_d3d9af27.ApiObjectMetadata", typing.Dict[builtins.str, typing.Any]],
        spec: typing.Union["MiddlewareSpec", typing.Dict[builtins.str, typing.Any]],
    ) -> None:
        '''Middleware is the CRD implementation of a Traefik Middleware.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/overview/

        :param metadata: 
        :param spec: MiddlewareSpec defines the desired state of a Middleware.

        :schema: Middleware
        '''
        if isinstance(metadata, dict):
            metadata = _cdk8s_d3d9af27.ApiObjectMetadata(**metadata)
        if isinstance(spec, dict):
            spec = MiddlewareSpec(**spec)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__0ad0a9121439c066d74fa5088ed49ce4e127744955cc6dbb3a8767cdfda6014b)
            check_type(argname="argument metadata", value=metadata, expected_type=type_hints["metadata"])
            check_type(argname="argument spec", value=spec, expected_type=type_hints["spec"])
        self._values: typing.Dict[builtins.str, typing.Any] = {
            "metadata": metadata,
            "spec": spec,
        }

    @builtins.property
    def metadata(self) -> "_cdk8s_d3d9af27.ApiObjectMetadata":
        '''
        :schema: Middleware#metadata
        '''
        result = self._values.get("metadata")
        assert result is not None, "Required property 'metadata' is missing"
        return typing.cast("_cdk8s_d3d9af27.ApiObjectMetadata", result)

    @builtins.property
    def spec(self) -> "MiddlewareSpec":
        '''MiddlewareSpec defines the desired state of a Middleware.

        :schema: Middleware#spec
        '''
        result = self._values.get("spec")
        assert result is not None, "Required property 'spec' is missing"
        return typing.cast("MiddlewareSpec", result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareProps(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpec",
    jsii_struct_bases=[],
    name_mapping={
        "add_prefix": "addPrefix",
        "basic_auth": "basicAuth",
        "buffering": "buffering",
        "chain": "chain",
        "circuit_breaker": "circuitBreaker",
        "compress": "compress",
        "content_type": "contentType",
        "digest_auth": "digestAuth",
        "encoded_characters": "encodedCharacters",
        "errors": "errors",
        "forward_auth": "forwardAuth",
        "grpc_web": "grpcWeb",
        "headers": "headers",
        "in_flight_req": "inFlightReq",
        "ip_allow_list": "ipAllowList",
        "ip_white_list": "ipWhiteList",
        "pass_tls_client_cert": "passTlsClientCert",
        "plugin": "plugin",
        "rate_limit": "rateLimit",
        "redirect_regex": "redirectRegex",
        "redirect_scheme": "redirectScheme",
        "replace_path": "replacePath",
        "replace_path_regex": "replacePathRegex",
        "retry": "retry",
        "strip_prefix": "stripPrefix",
        "strip_prefix_regex": "stripPrefixRegex",
    },
)
class MiddlewareSpec:
    def __init__(
        self,
        *,
        add_prefix: typing.Optional[typing.Union["MiddlewareSpecAddPrefix", typing.Dict[builtins.str, typing.Any]]] = None,
        basic_auth: typing.Optional[typing.Union["MiddlewareSpecBasicAuth", typing.Dict[builtins.str, typing.Any]]] = None,
        buffering: typing.Optional[typing.Union["MiddlewareSpecBuffering", typing.Dict[builtins.str, typing.Any]]] = None,
        chain: typing.Optional[typing.Union["MiddlewareSpecChain", typing.Dict[builtins.str, typing.Any]]] = None,
        circuit_breaker: typing.Optional[typing.Union["MiddlewareSpecCircuitBreaker", typing.Dict[builtins.str, typing.Any]]] = None,
        compress: typing.Optional[typing.Union["MiddlewareSpecCompress", typing.Dict[builtins.str, typing.Any]]] = None,
        content_type: typing.Optional[typing.Union["MiddlewareSpecContentType", typing.Dict[builtins.str, typing.Any]]] = None,
        digest_auth: typing.Optional[typing.Union["MiddlewareSpecDigestAuth", typing.Dict[builtins.str, typing.Any]]] = None,
        encoded_characters: typing.Optional[typing.Union["MiddlewareSpecEncodedCharacters", typing.Dict[builtins.str, typing.Any]]] = None,
        errors: typing.Optional[typing.Union["MiddlewareSpecErrors", typing.Dict[builtins.str, typing.Any]]] = None,
        forward_auth: typing.Optional[typing.Union["MiddlewareSpecForwardAuth", typing.Dict[builtins.str, typing.Any]]] = None,
        grpc_web: typing.Optional[typing.Union["MiddlewareSpecGrpcWeb", typing.Dict[builtins.str, typing.Any]]] = None,
        headers: typing.Optional[typing.Union["MiddlewareSpecHeaders", typing.Dict[builtins.str, typing.Any]]] = None,
        in_flight_req: typing.Optional[typing.Union["MiddlewareSpecInFlightReq", typing.Dict[builtins.str, typing.Any]]] = None,
        ip_allow_list: typing.Optional[typing.Union["MiddlewareSpecIpAllowList", typing.Dict[builtins.str, typing.Any]]] = None,
        ip_white_list: typing.Optional[typing.Union["MiddlewareSpecIpWhiteList", typing.Dict[builtins.str, typing.Any]]] = None,
        pass_tls_client_cert: typing.Optional[typing.Union["MiddlewareSpecPassTlsClientCert", typing.Dict[builtins.str, typing.Any]]] = None,
        plugin: typing.Optional[typing.Mapping[builtins.str, typing.Any]] = None,
        rate_limit: typing.Optional[typing.Union["MiddlewareSpecRateLimit", typing.Dict[builtins.str, typing.Any]]] = None,
        redirect_regex: typing.Optional[typing.Union["MiddlewareSpecRedirectRegex", typing.Dict[builtins.str, typing.Any]]] = None,
        redirect_scheme: typing.Optional[typing.Union["MiddlewareSpecRedirectScheme", typing.Dict[builtins.str, typing.Any]]] = None,
        replace_path: typing.Optional[typing.Union["MiddlewareSpecReplacePath", typing.Dict[builtins.str, typing.Any]]] = None,
        replace_path_regex: typing.Optional[typing.Union["MiddlewareSpecReplacePathRegex", typing.Dict[builtins.str, typing.Any]]] = None,
        retry: typing.Optional[typing.Union["MiddlewareSpecRetry", typing.Dict[builtins.str, typing.Any]]] = None,
        strip_prefix: typing.Optional[typing.Union["MiddlewareSpecStripPrefix", typing.Dict[builtins.str, typing.Any]]] = None,
        strip_prefix_regex: typing.Optional[typing.Union["MiddlewareSpecStripPrefixRegex", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''MiddlewareSpec defines the desired state of a Middleware.

        :param add_prefix: AddPrefix holds the add prefix middleware configuration. This middleware updates the path of a request before forwarding it. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/addprefix/
        :param basic_auth: BasicAuth holds the basic auth middleware configuration. This middleware restricts access to your services to known users. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/basicauth/
        :param buffering: Buffering holds the buffering middleware configuration. This middleware retries or limits the size of requests that can be forwarded to backends. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/buffering/#maxrequestbodybytes
        :param chain: Chain holds the configuration of the chain middleware. This middleware enables to define reusable combinations of other pieces of middleware. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/chain/
        :param circuit_breaker: CircuitBreaker holds the circuit breaker configuration.
        :param compress: Compress holds the compress middleware configuration. This middleware compresses responses before sending them to the client, using gzip, brotli, or zstd compression. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/compress/
        :param content_type: ContentType holds the content-type middleware configuration. This middleware exists to enable the correct behavior until at least the default one can be changed in a future version.
        :param digest_auth: DigestAuth holds the digest auth middleware configuration. This middleware restricts access to your services to known users. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/digestauth/
        :param encoded_characters: EncodedCharacters configures which encoded characters are allowed in the request path.
        :param errors: ErrorPage holds the custom error middleware configuration. This middleware returns a custom page in lieu of the default, according to configured ranges of HTTP Status codes. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/
        :param forward_auth: ForwardAuth holds the forward auth middleware configuration. This middleware delegates the request authentication to a Service. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/
        :param grpc_web: GrpcWeb holds the gRPC web middleware configuration. This middleware converts a gRPC web request to an HTTP/2 gRPC request.
        :param headers: Headers holds the headers middleware configuration. This middleware manages the requests and responses headers. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/headers/#customrequestheaders
        :param in_flight_req: InFlightReq holds the in-flight request middleware configuration. This middleware limits the number of requests being processed and served concurrently. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/
        :param ip_allow_list: IPAllowList holds the IP allowlist middleware configuration. This middleware limits allowed requests based on the client IP. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/
        :param ip_white_list: Deprecated: please use IPAllowList instead.
        :param pass_tls_client_cert: PassTLSClientCert holds the pass TLS client cert middleware configuration. This middleware adds the selected data from the passed client TLS certificate to a header. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/passtlsclientcert/
        :param plugin: Plugin defines the middleware plugin configuration. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/overview/#community-middlewares
        :param rate_limit: RateLimit holds the rate limit configuration. This middleware ensures that services will receive a fair amount of requests, and allows one to define what fair is. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/ratelimit/
        :param redirect_regex: RedirectRegex holds the redirect regex middleware configuration. This middleware redirects a request using regex matching and replacement. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectregex/#regex
        :param redirect_scheme: RedirectScheme holds the redirect scheme middleware configuration. This middleware redirects requests from a scheme/port to another. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectscheme/
        :param replace_path: ReplacePath holds the replace path middleware configuration. This middleware replaces the path of the request URL and store the original path in an X-Replaced-Path header. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepath/
        :param replace_path_regex: ReplacePathRegex holds the replace path regex middleware configuration. This middleware replaces the path of a URL using regex matching and replacement. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepathregex/
        :param retry: Retry holds the retry middleware configuration. This middleware reissues requests a given number of times to a backend server if that server does not reply. As soon as the server answers, the middleware stops retrying, regardless of the response status. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/retry/
        :param strip_prefix: StripPrefix holds the strip prefix middleware configuration. This middleware removes the specified prefixes from the URL path. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefix/
        :param strip_prefix_regex: StripPrefixRegex holds the strip prefix regex middleware configuration. This middleware removes the matching prefixes from the URL path. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefixregex/

        :schema: MiddlewareSpec
        '''
        if isinstance(add_prefix, dict):
            add_prefix = MiddlewareSpecAddPrefix(**add_prefix)
        if isinstance(basic_auth, dict):
            basic_auth = MiddlewareSpecBasicAuth(**basic_auth)
        if isinstance(buffering, dict):
            buffering = MiddlewareSpecBuffering(**buffering)
        if isinstance(chain, dict):
            chain = MiddlewareSpecChain(**chain)
        if isinstance(circuit_breaker, dict):
            circuit_breaker = MiddlewareSpecCircuitBreaker(**circuit_breaker)
        if isinstance(compress, dict):
            compress = MiddlewareSpecCompress(**compress)
        if isinstance(content_type, dict):
            content_type = MiddlewareSpecContentType(**content_type)
        if isinstance(digest_auth, dict):
            digest_auth = MiddlewareSpecDigestAuth(**digest_auth)
        if isinstance(encoded_characters, dict):
            encoded_characters = MiddlewareSpecEncodedCharacters(**encoded_characters)
        if isinstance(errors, dict):
            errors = MiddlewareSpecErrors(**errors)
        if isinstance(forward_auth, dict):
            forward_auth = MiddlewareSpecForwardAuth(**forward_auth)
        if isinstance(grpc_web, dict):
            grpc_web = MiddlewareSpecGrpcWeb(**grpc_web)
        if isinstance(headers, dict):
            headers = MiddlewareSpecHeaders(**headers)
        if isinstance(in_flight_req, dict):
            in_flight_req = MiddlewareSpecInFlightReq(**in_flight_req)
        if isinstance(ip_allow_list, dict):
            ip_allow_list = MiddlewareSpecIpAllowList(**ip_allow_list)
        if isinstance(ip_white_list, dict):
            ip_white_list = MiddlewareSpecIpWhiteList(**ip_white_list)
        if isinstance(pass_tls_client_cert, dict):
            pass_tls_client_cert = MiddlewareSpecPassTlsClientCert(**pass_tls_client_cert)
        if isinstance(rate_limit, dict):
            rate_limit = MiddlewareSpecRateLimit(**rate_limit)
        if isinstance(redirect_regex, dict):
            redirect_regex = MiddlewareSpecRedirectRegex(**redirect_regex)
        if isinstance(redirect_scheme, dict):
            redirect_scheme = MiddlewareSpecRedirectScheme(**redirect_scheme)
        if isinstance(replace_path, dict):
            replace_path = MiddlewareSpecReplacePath(**replace_path)
        if isinstance(replace_path_regex, dict):
            replace_path_regex = MiddlewareSpecReplacePathRegex(**replace_path_regex)
        if isinstance(retry, dict):
            retry = MiddlewareSpecRetry(**retry)
        if isinstance(strip_prefix, dict):
            strip_prefix = MiddlewareSpecStripPrefix(**strip_prefix)
        if isinstance(strip_prefix_regex, dict):
            strip_prefix_regex = MiddlewareSpecStripPrefixRegex(**strip_prefix_regex)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__ce380cb8b12ed80ca0d30ee521fc5fe712e98775bfbdc1ea67f60bbe039d0d06)
            check_type(argname="argument add_prefix", value=add_prefix, expected_type=type_hints["add_prefix"])
            check_type(argname="argument basic_auth", value=basic_auth, expected_type=type_hints["basic_auth"])
            check_type(argname="argument buffering", value=buffering, expected_type=type_hints["buffering"])
            check_type(argname="argument chain", value=chain, expected_type=type_hints["chain"])
            check_type(argname="argument circuit_breaker", value=circuit_breaker, expected_type=type_hints["circuit_breaker"])
            check_type(argname="argument compress", value=compress, expected_type=type_hints["compress"])
            check_type(argname="argument content_type", value=content_type, expected_type=type_hints["content_type"])
            check_type(argname="argument digest_auth", value=digest_auth, expected_type=type_hints["digest_auth"])
            check_type(argname="argument encoded_characters", value=encoded_characters, expected_type=type_hints["encoded_characters"])
            check_type(argname="argument errors", value=errors, expected_type=type_hints["errors"])
            check_type(argname="argument forward_auth", value=forward_auth, expected_type=type_hints["forward_auth"])
            check_type(argname="argument grpc_web", value=grpc_web, expected_type=type_hints["grpc_web"])
            check_type(argname="argument headers", value=headers, expected_type=type_hints["headers"])
            check_type(argname="argument in_flight_req", value=in_flight_req, expected_type=type_hints["in_flight_req"])
            check_type(argname="argument ip_allow_list", value=ip_allow_list, expected_type=type_hints["ip_allow_list"])
            check_type(argname="argument ip_white_list", value=ip_white_list, expected_type=type_hints["ip_white_list"])
            check_type(argname="argument pass_tls_client_cert", value=pass_tls_client_cert, expected_type=type_hints["pass_tls_client_cert"])
            check_type(argname="argument plugin", value=plugin, expected_type=type_hints["plugin"])
            check_type(argname="argument rate_limit", value=rate_limit, expected_type=type_hints["rate_limit"])
            check_type(argname="argument redirect_regex", value=redirect_regex, expected_type=type_hints["redirect_regex"])
            check_type(argname="argument redirect_scheme", value=redirect_scheme, expected_type=type_hints["redirect_scheme"])
            check_type(argname="argument replace_path", value=replace_path, expected_type=type_hints["replace_path"])
            check_type(argname="argument replace_path_regex", value=replace_path_regex, expected_type=type_hints["replace_path_regex"])
            check_type(argname="argument retry", value=retry, expected_type=type_hints["retry"])
            check_type(argname="argument strip_prefix", value=strip_prefix, expected_type=type_hints["strip_prefix"])
            check_type(argname="argument strip_prefix_regex", value=strip_prefix_regex, expected_type=type_hints["strip_prefix_regex"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if add_prefix is not None:
            self._values["add_prefix"] = add_prefix
        if basic_auth is not None:
            self._values["basic_auth"] = basic_auth
        if buffering is not None:
            self._values["buffering"] = buffering
        if chain is not None:
            self._values["chain"] = chain
        if circuit_breaker is not None:
            self._values["circuit_breaker"] = circuit_breaker
        if compress is not None:
            self._values["compress"] = compress
        if content_type is not None:
            self._values["content_type"] = content_type
        if digest_auth is not None:
            self._values["digest_auth"] = digest_auth
        if encoded_characters is not None:
            self._values["encoded_characters"] = encoded_characters
        if errors is not None:
            self._values["errors"] = errors
        if forward_auth is not None:
            self._values["forward_auth"] = forward_auth
        if grpc_web is not None:
            self._values["grpc_web"] = grpc_web
        if headers is not None:
            self._values["headers"] = headers
        if in_flight_req is not None:
            self._values["in_flight_req"] = in_flight_req
        if ip_allow_list is not None:
            self._values["ip_allow_list"] = ip_allow_list
        if ip_white_list is not None:
            self._values["ip_white_list"] = ip_white_list
        if pass_tls_client_cert is not None:
            self._values["pass_tls_client_cert"] = pass_tls_client_cert
        if plugin is not None:
            self._values["plugin"] = plugin
        if rate_limit is not None:
            self._values["rate_limit"] = rate_limit
        if redirect_regex is not None:
            self._values["redirect_regex"] = redirect_regex
        if redirect_scheme is not None:
            self._values["redirect_scheme"] = redirect_scheme
        if replace_path is not None:
            self._values["replace_path"] = replace_path
        if replace_path_regex is not None:
            self._values["replace_path_regex"] = replace_path_regex
        if retry is not None:
            self._values["retry"] = retry
        if strip_prefix is not None:
            self._values["strip_prefix"] = strip_prefix
        if strip_prefix_regex is not None:
            self._values["strip_prefix_regex"] = strip_prefix_regex

    @builtins.property
    def add_prefix(self) -> typing.Optional["MiddlewareSpecAddPrefix"]:
        '''AddPrefix holds the add prefix middleware configuration.

        This middleware updates the path of a request before forwarding it.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/addprefix/

        :schema: MiddlewareSpec#addPrefix
        '''
        result = self._values.get("add_prefix")
        return typing.cast(typing.Optional["MiddlewareSpecAddPrefix"], result)

    @builtins.property
    def basic_auth(self) -> typing.Optional["MiddlewareSpecBasicAuth"]:
        '''BasicAuth holds the basic auth middleware configuration.

        This middleware restricts access to your services to known users.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/basicauth/

        :schema: MiddlewareSpec#basicAuth
        '''
        result = self._values.get("basic_auth")
        return typing.cast(typing.Optional["MiddlewareSpecBasicAuth"], result)

    @builtins.property
    def buffering(self) -> typing.Optional["MiddlewareSpecBuffering"]:
        '''Buffering holds the buffering middleware configuration.

        This middleware retries or limits the size of requests that can be forwarded to backends.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/buffering/#maxrequestbodybytes

        :schema: MiddlewareSpec#buffering
        '''
        result = self._values.get("buffering")
        return typing.cast(typing.Optional["MiddlewareSpecBuffering"], result)

    @builtins.property
    def chain(self) -> typing.Optional["MiddlewareSpecChain"]:
        '''Chain holds the configuration of the chain middleware.

        This middleware enables to define reusable combinations of other pieces of middleware.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/chain/

        :schema: MiddlewareSpec#chain
        '''
        result = self._values.get("chain")
        return typing.cast(typing.Optional["MiddlewareSpecChain"], result)

    @builtins.property
    def circuit_breaker(self) -> typing.Optional["MiddlewareSpecCircuitBreaker"]:
        '''CircuitBreaker holds the circuit breaker configuration.

        :schema: MiddlewareSpec#circuitBreaker
        '''
        result = self._values.get("circuit_breaker")
        return typing.cast(typing.Optional["MiddlewareSpecCircuitBreaker"], result)

    @builtins.property
    def compress(self) -> typing.Optional["MiddlewareSpecCompress"]:
        '''Compress holds the compress middleware configuration.

        This middleware compresses responses before sending them to the client, using gzip, brotli, or zstd compression.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/compress/

        :schema: MiddlewareSpec#compress
        '''
        result = self._values.get("compress")
        return typing.cast(typing.Optional["MiddlewareSpecCompress"], result)

    @builtins.property
    def content_type(self) -> typing.Optional["MiddlewareSpecContentType"]:
        '''ContentType holds the content-type middleware configuration.

        This middleware exists to enable the correct behavior until at least the default one can be changed in a future version.

        :schema: MiddlewareSpec#contentType
        '''
        result = self._values.get("content_type")
        return typing.cast(typing.Optional["MiddlewareSpecContentType"], result)

    @builtins.property
    def digest_auth(self) -> typing.Optional["MiddlewareSpecDigestAuth"]:
        '''DigestAuth holds the digest auth middleware configuration.

        This middleware restricts access to your services to known users.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/digestauth/

        :schema: MiddlewareSpec#digestAuth
        '''
        result = self._values.get("digest_auth")
        return typing.cast(typing.Optional["MiddlewareSpecDigestAuth"], result)

    @builtins.property
    def encoded_characters(self) -> typing.Optional["MiddlewareSpecEncodedCharacters"]:
        '''EncodedCharacters configures which encoded characters are allowed in the request path.

        :schema: MiddlewareSpec#encodedCharacters
        '''
        result = self._values.get("encoded_characters")
        return typing.cast(typing.Optional["MiddlewareSpecEncodedCharacters"], result)

    @builtins.property
    def errors(self) -> typing.Optional["MiddlewareSpecErrors"]:
        '''ErrorPage holds the custom error middleware configuration.

        This middleware returns a custom page in lieu of the default, according to configured ranges of HTTP Status codes.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/

        :schema: MiddlewareSpec#errors
        '''
        result = self._values.get("errors")
        return typing.cast(typing.Optional["MiddlewareSpecErrors"], result)

    @builtins.property
    def forward_auth(self) -> typing.Optional["MiddlewareSpecForwardAuth"]:
        '''ForwardAuth holds the forward auth middleware configuration.

        This middleware delegates the request authentication to a Service.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/

        :schema: MiddlewareSpec#forwardAuth
        '''
        result = self._values.get("forward_auth")
        return typing.cast(typing.Optional["MiddlewareSpecForwardAuth"], result)

    @builtins.property
    def grpc_web(self) -> typing.Optional["MiddlewareSpecGrpcWeb"]:
        '''GrpcWeb holds the gRPC web middleware configuration.

        This middleware converts a gRPC web request to an HTTP/2 gRPC request.

        :schema: MiddlewareSpec#grpcWeb
        '''
        result = self._values.get("grpc_web")
        return typing.cast(typing.Optional["MiddlewareSpecGrpcWeb"], result)

    @builtins.property
    def headers(self) -> typing.Optional["MiddlewareSpecHeaders"]:
        '''Headers holds the headers middleware configuration.

        This middleware manages the requests and responses headers.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/headers/#customrequestheaders

        :schema: MiddlewareSpec#headers
        '''
        result = self._values.get("headers")
        return typing.cast(typing.Optional["MiddlewareSpecHeaders"], result)

    @builtins.property
    def in_flight_req(self) -> typing.Optional["MiddlewareSpecInFlightReq"]:
        '''InFlightReq holds the in-flight request middleware configuration.

        This middleware limits the number of requests being processed and served concurrently.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/

        :schema: MiddlewareSpec#inFlightReq
        '''
        result = self._values.get("in_flight_req")
        return typing.cast(typing.Optional["MiddlewareSpecInFlightReq"], result)

    @builtins.property
    def ip_allow_list(self) -> typing.Optional["MiddlewareSpecIpAllowList"]:
        '''IPAllowList holds the IP allowlist middleware configuration.

        This middleware limits allowed requests based on the client IP.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/

        :schema: MiddlewareSpec#ipAllowList
        '''
        result = self._values.get("ip_allow_list")
        return typing.cast(typing.Optional["MiddlewareSpecIpAllowList"], result)

    @builtins.property
    def ip_white_list(self) -> typing.Optional["MiddlewareSpecIpWhiteList"]:
        '''Deprecated: please use IPAllowList instead.

        :schema: MiddlewareSpec#ipWhiteList
        '''
        result = self._values.get("ip_white_list")
        return typing.cast(typing.Optional["MiddlewareSpecIpWhiteList"], result)

    @builtins.property
    def pass_tls_client_cert(
        self,
    ) -> typing.Optional["MiddlewareSpecPassTlsClientCert"]:
        '''PassTLSClientCert holds the pass TLS client cert middleware configuration.

        This middleware adds the selected data from the passed client TLS certificate to a header.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/passtlsclientcert/

        :schema: MiddlewareSpec#passTLSClientCert
        '''
        result = self._values.get("pass_tls_client_cert")
        return typing.cast(typing.Optional["MiddlewareSpecPassTlsClientCert"], result)

    @builtins.property
    def plugin(self) -> typing.Optional[typing.Mapping[builtins.str, typing.Any]]:
        '''Plugin defines the middleware plugin configuration.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/overview/#community-middlewares

        :schema: MiddlewareSpec#plugin
        '''
        result = self._values.get("plugin")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, typing.Any]], result)

    @builtins.property
    def rate_limit(self) -> typing.Optional["MiddlewareSpecRateLimit"]:
        '''RateLimit holds the rate limit configuration.

        This middleware ensures that services will receive a fair amount of requests, and allows one to define what fair is.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/ratelimit/

        :schema: MiddlewareSpec#rateLimit
        '''
        result = self._values.get("rate_limit")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimit"], result)

    @builtins.property
    def redirect_regex(self) -> typing.Optional["MiddlewareSpecRedirectRegex"]:
        '''RedirectRegex holds the redirect regex middleware configuration.

        This middleware redirects a request using regex matching and replacement.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectregex/#regex

        :schema: MiddlewareSpec#redirectRegex
        '''
        result = self._values.get("redirect_regex")
        return typing.cast(typing.Optional["MiddlewareSpecRedirectRegex"], result)

    @builtins.property
    def redirect_scheme(self) -> typing.Optional["MiddlewareSpecRedirectScheme"]:
        '''RedirectScheme holds the redirect scheme middleware configuration.

        This middleware redirects requests from a scheme/port to another.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectscheme/

        :schema: MiddlewareSpec#redirectScheme
        '''
        result = self._values.get("redirect_scheme")
        return typing.cast(typing.Optional["MiddlewareSpecRedirectScheme"], result)

    @builtins.property
    def replace_path(self) -> typing.Optional["MiddlewareSpecReplacePath"]:
        '''ReplacePath holds the replace path middleware configuration.

        This middleware replaces the path of the request URL and store the original path in an X-Replaced-Path header.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepath/

        :schema: MiddlewareSpec#replacePath
        '''
        result = self._values.get("replace_path")
        return typing.cast(typing.Optional["MiddlewareSpecReplacePath"], result)

    @builtins.property
    def replace_path_regex(self) -> typing.Optional["MiddlewareSpecReplacePathRegex"]:
        '''ReplacePathRegex holds the replace path regex middleware configuration.

        This middleware replaces the path of a URL using regex matching and replacement.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepathregex/

        :schema: MiddlewareSpec#replacePathRegex
        '''
        result = self._values.get("replace_path_regex")
        return typing.cast(typing.Optional["MiddlewareSpecReplacePathRegex"], result)

    @builtins.property
    def retry(self) -> typing.Optional["MiddlewareSpecRetry"]:
        '''Retry holds the retry middleware configuration.

        This middleware reissues requests a given number of times to a backend server if that server does not reply.
        As soon as the server answers, the middleware stops retrying, regardless of the response status.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/retry/

        :schema: MiddlewareSpec#retry
        '''
        result = self._values.get("retry")
        return typing.cast(typing.Optional["MiddlewareSpecRetry"], result)

    @builtins.property
    def strip_prefix(self) -> typing.Optional["MiddlewareSpecStripPrefix"]:
        '''StripPrefix holds the strip prefix middleware configuration.

        This middleware removes the specified prefixes from the URL path.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefix/

        :schema: MiddlewareSpec#stripPrefix
        '''
        result = self._values.get("strip_prefix")
        return typing.cast(typing.Optional["MiddlewareSpecStripPrefix"], result)

    @builtins.property
    def strip_prefix_regex(self) -> typing.Optional["MiddlewareSpecStripPrefixRegex"]:
        '''StripPrefixRegex holds the strip prefix regex middleware configuration.

        This middleware removes the matching prefixes from the URL path.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefixregex/

        :schema: MiddlewareSpec#stripPrefixRegex
        '''
        result = self._values.get("strip_prefix_regex")
        return typing.cast(typing.Optional["MiddlewareSpecStripPrefixRegex"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpec(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecAddPrefix",
    jsii_struct_bases=[],
    name_mapping={"prefix": "prefix"},
)
class MiddlewareSpecAddPrefix:
    def __init__(self, *, prefix: typing.Optional[builtins.str] = None) -> None:
        '''AddPrefix holds the add prefix middleware configuration.

        This middleware updates the path of a request before forwarding it.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/addprefix/

        :param prefix: Prefix is the string to add before the current path in the requested URL. It should include a leading slash (/).

        :schema: MiddlewareSpecAddPrefix
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__12f602d834db01557f33f1341b7b2664e39ff4e093ec8bfe95b4a01ff756b4ed)
            check_type(argname="argument prefix", value=prefix, expected_type=type_hints["prefix"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if prefix is not None:
            self._values["prefix"] = prefix

    @builtins.property
    def prefix(self) -> typing.Optional[builtins.str]:
        '''Prefix is the string to add before the current path in the requested URL.

        It should include a leading slash (/).

        :schema: MiddlewareSpecAddPrefix#prefix
        '''
        result = self._values.get("prefix")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecAddPrefix(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecBasicAuth",
    jsii_struct_bases=[],
    name_mapping={
        "header_field": "headerField",
        "realm": "realm",
        "remove_header": "removeHeader",
        "secret": "secret",
    },
)
class MiddlewareSpecBasicAuth:
    def __init__(
        self,
        *,
        header_field: typing.Optional[builtins.str] = None,
        realm: typing.Optional[builtins.str] = None,
        remove_header: typing.Optional[builtins.bool] = None,
        secret: typing.Optional[builtins.str] = None,
    ) -> None:
        '''BasicAuth holds the basic auth middleware configuration.

        This middleware restricts access to your services to known users.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/basicauth/

        :param header_field: HeaderField defines a header field to store the authenticated user. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/basicauth/#headerfield
        :param realm: Realm allows the protected resources on a server to be partitioned into a set of protection spaces, each with its own authentication scheme. Default: traefik.
        :param remove_header: RemoveHeader sets the removeHeader option to true to remove the authorization header before forwarding the request to your service. Default: false.
        :param secret: Secret is the name of the referenced Kubernetes Secret containing user credentials.

        :schema: MiddlewareSpecBasicAuth
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__f44b2b94f0465ff9c5a595cef2a3c7eebce806857003871d9e0bf166cf06d103)
            check_type(argname="argument header_field", value=header_field, expected_type=type_hints["header_field"])
            check_type(argname="argument realm", value=realm, expected_type=type_hints["realm"])
            check_type(argname="argument remove_header", value=remove_header, expected_type=type_hints["remove_header"])
            check_type(argname="argument secret", value=secret, expected_type=type_hints["secret"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if header_field is not None:
            self._values["header_field"] = header_field
        if realm is not None:
            self._values["realm"] = realm
        if remove_header is not None:
            self._values["remove_header"] = remove_header
        if secret is not None:
            self._values["secret"] = secret

    @builtins.property
    def header_field(self) -> typing.Optional[builtins.str]:
        '''HeaderField defines a header field to store the authenticated user.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/basicauth/#headerfield

        :schema: MiddlewareSpecBasicAuth#headerField
        '''
        result = self._values.get("header_field")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def realm(self) -> typing.Optional[builtins.str]:
        '''Realm allows the protected resources on a server to be partitioned into a set of protection spaces, each with its own authentication scheme.

        Default: traefik.

        :schema: MiddlewareSpecBasicAuth#realm
        '''
        result = self._values.get("realm")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def remove_header(self) -> typing.Optional[builtins.bool]:
        '''RemoveHeader sets the removeHeader option to true to remove the authorization header before forwarding the request to your service.

        Default: false.

        :schema: MiddlewareSpecBasicAuth#removeHeader
        '''
        result = self._values.get("remove_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def secret(self) -> typing.Optional[builtins.str]:
        '''Secret is the name of the referenced Kubernetes Secret containing user credentials.

        :schema: MiddlewareSpecBasicAuth#secret
        '''
        result = self._values.get("secret")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecBasicAuth(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecBuffering",
    jsii_struct_bases=[],
    name_mapping={
        "max_request_body_bytes": "maxRequestBodyBytes",
        "max_response_body_bytes": "maxResponseBodyBytes",
        "mem_request_body_bytes": "memRequestBodyBytes",
        "mem_response_body_bytes": "memResponseBodyBytes",
        "retry_expression": "retryExpression",
    },
)
class MiddlewareSpecBuffering:
    def __init__(
        self,
        *,
        max_request_body_bytes: typing.Optional[jsii.Number] = None,
        max_response_body_bytes: typing.Optional[jsii.Number] = None,
        mem_request_body_bytes: typing.Optional[jsii.Number] = None,
        mem_response_body_bytes: typing.Optional[jsii.Number] = None,
        retry_expression: typing.Optional[builtins.str] = None,
    ) -> None:
        '''Buffering holds the buffering middleware configuration.

        This middleware retries or limits the size of requests that can be forwarded to backends.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/buffering/#maxrequestbodybytes

        :param max_request_body_bytes: MaxRequestBodyBytes defines the maximum allowed body size for the request (in bytes). If the request exceeds the allowed size, it is not forwarded to the service, and the client gets a 413 (Request Entity Too Large) response. Default: 0 (no maximum).
        :param max_response_body_bytes: MaxResponseBodyBytes defines the maximum allowed response size from the service (in bytes). If the response exceeds the allowed size, it is not forwarded to the client. The client gets a 500 (Internal Server Error) response instead. Default: 0 (no maximum).
        :param mem_request_body_bytes: MemRequestBodyBytes defines the threshold (in bytes) from which the request will be buffered on disk instead of in memory. Default: 1048576 (1Mi).
        :param mem_response_body_bytes: MemResponseBodyBytes defines the threshold (in bytes) from which the response will be buffered on disk instead of in memory. Default: 1048576 (1Mi).
        :param retry_expression: RetryExpression defines the retry conditions. It is a logical combination of functions with operators AND (&&) and OR (||). More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/buffering/#retryexpression

        :schema: MiddlewareSpecBuffering
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__a25a2add0bcfa3486c52dbfed2ef1f5e217975b15d2e936be28460546d81aee8)
            check_type(argname="argument max_request_body_bytes", value=max_request_body_bytes, expected_type=type_hints["max_request_body_bytes"])
            check_type(argname="argument max_response_body_bytes", value=max_response_body_bytes, expected_type=type_hints["max_response_body_bytes"])
            check_type(argname="argument mem_request_body_bytes", value=mem_request_body_bytes, expected_type=type_hints["mem_request_body_bytes"])
            check_type(argname="argument mem_response_body_bytes", value=mem_response_body_bytes, expected_type=type_hints["mem_response_body_bytes"])
            check_type(argname="argument retry_expression", value=retry_expression, expected_type=type_hints["retry_expression"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if max_request_body_bytes is not None:
            self._values["max_request_body_bytes"] = max_request_body_bytes
        if max_response_body_bytes is not None:
            self._values["max_response_body_bytes"] = max_response_body_bytes
        if mem_request_body_bytes is not None:
            self._values["mem_request_body_bytes"] = mem_request_body_bytes
        if mem_response_body_bytes is not None:
            self._values["mem_response_body_bytes"] = mem_response_body_bytes
        if retry_expression is not None:
            self._values["retry_expression"] = retry_expression

    @builtins.property
    def max_request_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MaxRequestBodyBytes defines the maximum allowed body size for the request (in bytes).

        If the request exceeds the allowed size, it is not forwarded to the service, and the client gets a 413 (Request Entity Too Large) response.
        Default: 0 (no maximum).

        :schema: MiddlewareSpecBuffering#maxRequestBodyBytes
        '''
        result = self._values.get("max_request_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def max_response_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MaxResponseBodyBytes defines the maximum allowed response size from the service (in bytes).

        If the response exceeds the allowed size, it is not forwarded to the client. The client gets a 500 (Internal Server Error) response instead.
        Default: 0 (no maximum).

        :schema: MiddlewareSpecBuffering#maxResponseBodyBytes
        '''
        result = self._values.get("max_response_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def mem_request_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MemRequestBodyBytes defines the threshold (in bytes) from which the request will be buffered on disk instead of in memory.

        Default: 1048576 (1Mi).

        :schema: MiddlewareSpecBuffering#memRequestBodyBytes
        '''
        result = self._values.get("mem_request_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def mem_response_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MemResponseBodyBytes defines the threshold (in bytes) from which the response will be buffered on disk instead of in memory.

        Default: 1048576 (1Mi).

        :schema: MiddlewareSpecBuffering#memResponseBodyBytes
        '''
        result = self._values.get("mem_response_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def retry_expression(self) -> typing.Optional[builtins.str]:
        '''RetryExpression defines the retry conditions.

        It is a logical combination of functions with operators AND (&&) and OR (||).
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/buffering/#retryexpression

        :schema: MiddlewareSpecBuffering#retryExpression
        '''
        result = self._values.get("retry_expression")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecBuffering(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecChain",
    jsii_struct_bases=[],
    name_mapping={"middlewares": "middlewares"},
)
class MiddlewareSpecChain:
    def __init__(
        self,
        *,
        middlewares: typing.Optional[typing.Sequence[typing.Union["MiddlewareSpecChainMiddlewares", typing.Dict[builtins.str, typing.Any]]]] = None,
    ) -> None:
        '''Chain holds the configuration of the chain middleware.

        This middleware enables to define reusable combinations of other pieces of middleware.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/chain/

        :param middlewares: Middlewares is the list of MiddlewareRef which composes the chain.

        :schema: MiddlewareSpecChain
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__af930015b1a91aae6bfb8d41eea2d22f70713b0d31b4edd95ac0c0add0f3ee28)
            check_type(argname="argument middlewares", value=middlewares, expected_type=type_hints["middlewares"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if middlewares is not None:
            self._values["middlewares"] = middlewares

    @builtins.property
    def middlewares(
        self,
    ) -> typing.Optional[typing.List["MiddlewareSpecChainMiddlewares"]]:
        '''Middlewares is the list of MiddlewareRef which composes the chain.

        :schema: MiddlewareSpecChain#middlewares
        '''
        result = self._values.get("middlewares")
        return typing.cast(typing.Optional[typing.List["MiddlewareSpecChainMiddlewares"]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecChain(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecChainMiddlewares",
    jsii_struct_bases=[],
    name_mapping={"name": "name", "namespace": "namespace"},
)
class MiddlewareSpecChainMiddlewares:
    def __init__(
        self,
        *,
        name: builtins.str,
        namespace: typing.Optional[builtins.str] = None,
    ) -> None:
        '''MiddlewareRef is a reference to a Middleware resource.

        :param name: Name defines the name of the referenced Middleware resource.
        :param namespace: Namespace defines the namespace of the referenced Middleware resource.

        :schema: MiddlewareSpecChainMiddlewares
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__11f728571c236bc02754dfdd36d5be449a19812ab57aed23e44c422ff858613f)
            check_type(argname="argument name", value=name, expected_type=type_hints["name"])
            check_type(argname="argument namespace", value=namespace, expected_type=type_hints["namespace"])
        self._values: typing.Dict[builtins.str, typing.Any] = {
            "name": name,
        }
        if namespace is not None:
            self._values["namespace"] = namespace

    @builtins.property
    def name(self) -> builtins.str:
        '''Name defines the name of the referenced Middleware resource.

        :schema: MiddlewareSpecChainMiddlewares#name
        '''
        result = self._values.get("name")
        assert result is not None, "Required property 'name' is missing"
        return typing.cast(builtins.str, result)

    @builtins.property
    def namespace(self) -> typing.Optional[builtins.str]:
        '''Namespace defines the namespace of the referenced Middleware resource.

        :schema: MiddlewareSpecChainMiddlewares#namespace
        '''
        result = self._values.get("namespace")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecChainMiddlewares(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecCircuitBreaker",
    jsii_struct_bases=[],
    name_mapping={
        "check_period": "checkPeriod",
        "expression": "expression",
        "fallback_duration": "fallbackDuration",
        "recovery_duration": "recoveryDuration",
        "response_code": "responseCode",
    },
)
class MiddlewareSpecCircuitBreaker:
    def __init__(
        self,
        *,
        check_period: typing.Optional["MiddlewareSpecCircuitBreakerCheckPeriod"] = None,
        expression: typing.Optional[builtins.str] = None,
        fallback_duration: typing.Optional["MiddlewareSpecCircuitBreakerFallbackDuration"] = None,
        recovery_duration: typing.Optional["MiddlewareSpecCircuitBreakerRecoveryDuration"] = None,
        response_code: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''CircuitBreaker holds the circuit breaker configuration.

        :param check_period: CheckPeriod is the interval between successive checks of the circuit breaker condition (when in standby state).
        :param expression: Expression is the condition that triggers the tripped state.
        :param fallback_duration: FallbackDuration is the duration for which the circuit breaker will wait before trying to recover (from a tripped state).
        :param recovery_duration: RecoveryDuration is the duration for which the circuit breaker will try to recover (as soon as it is in recovering state).
        :param response_code: ResponseCode is the status code that the circuit breaker will return while it is in the open state.

        :schema: MiddlewareSpecCircuitBreaker
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__fe68d84d92d561464bafe0e87d7698d5cecfc2879232ccae37df19b44d67ebf7)
            check_type(argname="argument check_period", value=check_period, expected_type=type_hints["check_period"])
            check_type(argname="argument expression", value=expression, expected_type=type_hints["expression"])
            check_type(argname="argument fallback_duration", value=fallback_duration, expected_type=type_hints["fallback_duration"])
            check_type(argname="argument recovery_duration", value=recovery_duration, expected_type=type_hints["recovery_duration"])
            check_type(argname="argument response_code", value=response_code, expected_type=type_hints["response_code"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if check_period is not None:
            self._values["check_period"] = check_period
        if expression is not None:
            self._values["expression"] = expression
        if fallback_duration is not None:
            self._values["fallback_duration"] = fallback_duration
        if recovery_duration is not None:
            self._values["recovery_duration"] = recovery_duration
        if response_code is not None:
            self._values["response_code"] = response_code

    @builtins.property
    def check_period(
        self,
    ) -> typing.Optional["MiddlewareSpecCircuitBreakerCheckPeriod"]:
        '''CheckPeriod is the interval between successive checks of the circuit breaker condition (when in standby state).

        :schema: MiddlewareSpecCircuitBreaker#checkPeriod
        '''
        result = self._values.get("check_period")
        return typing.cast(typing.Optional["MiddlewareSpecCircuitBreakerCheckPeriod"], result)

    @builtins.property
    def expression(self) -> typing.Optional[builtins.str]:
        '''Expression is the condition that triggers the tripped state.

        :schema: MiddlewareSpecCircuitBreaker#expression
        '''
        result = self._values.get("expression")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def fallback_duration(
        self,
    ) -> typing.Optional["MiddlewareSpecCircuitBreakerFallbackDuration"]:
        '''FallbackDuration is the duration for which the circuit breaker will wait before trying to recover (from a tripped state).

        :schema: MiddlewareSpecCircuitBreaker#fallbackDuration
        '''
        result = self._values.get("fallback_duration")
        return typing.cast(typing.Optional["MiddlewareSpecCircuitBreakerFallbackDuration"], result)

    @builtins.property
    def recovery_duration(
        self,
    ) -> typing.Optional["MiddlewareSpecCircuitBreakerRecoveryDuration"]:
        '''RecoveryDuration is the duration for which the circuit breaker will try to recover (as soon as it is in recovering state).

        :schema: MiddlewareSpecCircuitBreaker#recoveryDuration
        '''
        result = self._values.get("recovery_duration")
        return typing.cast(typing.Optional["MiddlewareSpecCircuitBreakerRecoveryDuration"], result)

    @builtins.property
    def response_code(self) -> typing.Optional[jsii.Number]:
        '''ResponseCode is the status code that the circuit breaker will return while it is in the open state.

        :schema: MiddlewareSpecCircuitBreaker#responseCode
        '''
        result = self._values.get("response_code")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecCircuitBreaker(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecCircuitBreakerCheckPeriod(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecCircuitBreakerCheckPeriod",
):
    '''CheckPeriod is the interval between successive checks of the circuit breaker condition (when in standby state).

    :schema: MiddlewareSpecCircuitBreakerCheckPeriod
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecCircuitBreakerCheckPeriod":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__312c83112051f097e4346bf959a987dfaa9f0a487b78a086cb4b0096407b833a)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerCheckPeriod", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecCircuitBreakerCheckPeriod":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b74e4d4efcdd781808219cf6b5b75799291f5459e1243c7bb2351be2e9bc712f)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerCheckPeriod", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecCircuitBreakerFallbackDuration(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecCircuitBreakerFallbackDuration",
):
    '''FallbackDuration is the duration for which the circuit breaker will wait before trying to recover (from a tripped state).

    :schema: MiddlewareSpecCircuitBreakerFallbackDuration
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecCircuitBreakerFallbackDuration":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__929c51a6b61cba72801d18dd3584ec949c8dd993365d0204fe48335e2bfbe3dd)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerFallbackDuration", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecCircuitBreakerFallbackDuration":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__34740f301855c6240b01a8ff571c8984a9a91aae9f8f1428aaa308f8c3208670)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerFallbackDuration", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecCircuitBreakerRecoveryDuration(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecCircuitBreakerRecoveryDuration",
):
    '''RecoveryDuration is the duration for which the circuit breaker will try to recover (as soon as it is in recovering state).

    :schema: MiddlewareSpecCircuitBreakerRecoveryDuration
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecCircuitBreakerRecoveryDuration":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__1cb6a45323a149cb52e776be41c9811b948ce54f8cbdb7c128bbc361085b1100)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerRecoveryDuration", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecCircuitBreakerRecoveryDuration":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__9de2b3de8803867dfb741555c71a65561b672013f9a59fcb473338324c51567a)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecCircuitBreakerRecoveryDuration", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecCompress",
    jsii_struct_bases=[],
    name_mapping={
        "default_encoding": "defaultEncoding",
        "encodings": "encodings",
        "excluded_content_types": "excludedContentTypes",
        "included_content_types": "includedContentTypes",
        "min_response_body_bytes": "minResponseBodyBytes",
    },
)
class MiddlewareSpecCompress:
    def __init__(
        self,
        *,
        default_encoding: typing.Optional[builtins.str] = None,
        encodings: typing.Optional[typing.Sequence[builtins.str]] = None,
        excluded_content_types: typing.Optional[typing.Sequence[builtins.str]] = None,
        included_content_types: typing.Optional[typing.Sequence[builtins.str]] = None,
        min_response_body_bytes: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''Compress holds the compress middleware configuration.

        This middleware compresses responses before sending them to the client, using gzip, brotli, or zstd compression.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/compress/

        :param default_encoding: DefaultEncoding specifies the default encoding if the ``Accept-Encoding`` header is not in the request or contains a wildcard (``*``).
        :param encodings: Encodings defines the list of supported compression algorithms.
        :param excluded_content_types: ExcludedContentTypes defines the list of content types to compare the Content-Type header of the incoming requests and responses before compressing. ``application/grpc`` is always excluded.
        :param included_content_types: IncludedContentTypes defines the list of content types to compare the Content-Type header of the responses before compressing.
        :param min_response_body_bytes: MinResponseBodyBytes defines the minimum amount of bytes a response body must have to be compressed. Default: 1024.

        :schema: MiddlewareSpecCompress
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__73adb7f8059669b6b1c823597d7548279d898a355b8a664fba663e4b39246b76)
            check_type(argname="argument default_encoding", value=default_encoding, expected_type=type_hints["default_encoding"])
            check_type(argname="argument encodings", value=encodings, expected_type=type_hints["encodings"])
            check_type(argname="argument excluded_content_types", value=excluded_content_types, expected_type=type_hints["excluded_content_types"])
            check_type(argname="argument included_content_types", value=included_content_types, expected_type=type_hints["included_content_types"])
            check_type(argname="argument min_response_body_bytes", value=min_response_body_bytes, expected_type=type_hints["min_response_body_bytes"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if default_encoding is not None:
            self._values["default_encoding"] = default_encoding
        if encodings is not None:
            self._values["encodings"] = encodings
        if excluded_content_types is not None:
            self._values["excluded_content_types"] = excluded_content_types
        if included_content_types is not None:
            self._values["included_content_types"] = included_content_types
        if min_response_body_bytes is not None:
            self._values["min_response_body_bytes"] = min_response_body_bytes

    @builtins.property
    def default_encoding(self) -> typing.Optional[builtins.str]:
        '''DefaultEncoding specifies the default encoding if the ``Accept-Encoding`` header is not in the request or contains a wildcard (``*``).

        :schema: MiddlewareSpecCompress#defaultEncoding
        '''
        result = self._values.get("default_encoding")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def encodings(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Encodings defines the list of supported compression algorithms.

        :schema: MiddlewareSpecCompress#encodings
        '''
        result = self._values.get("encodings")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def excluded_content_types(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ExcludedContentTypes defines the list of content types to compare the Content-Type header of the incoming requests and responses before compressing.

        ``application/grpc`` is always excluded.

        :schema: MiddlewareSpecCompress#excludedContentTypes
        '''
        result = self._values.get("excluded_content_types")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def included_content_types(self) -> typing.Optional[typing.List[builtins.str]]:
        '''IncludedContentTypes defines the list of content types to compare the Content-Type header of the responses before compressing.

        :schema: MiddlewareSpecCompress#includedContentTypes
        '''
        result = self._values.get("included_content_types")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def min_response_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MinResponseBodyBytes defines the minimum amount of bytes a response body must have to be compressed.

        Default: 1024.

        :schema: MiddlewareSpecCompress#minResponseBodyBytes
        '''
        result = self._values.get("min_response_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecCompress(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecContentType",
    jsii_struct_bases=[],
    name_mapping={"auto_detect": "autoDetect"},
)
class MiddlewareSpecContentType:
    def __init__(self, *, auto_detect: typing.Optional[builtins.bool] = None) -> None:
        '''ContentType holds the content-type middleware configuration.

        This middleware exists to enable the correct behavior until at least the default one can be changed in a future version.

        :param auto_detect: AutoDetect specifies whether to let the ``Content-Type`` header, if it has not been set by the backend, be automatically set to a value derived from the contents of the response. Deprecated: AutoDetect option is deprecated, Content-Type middleware is only meant to be used to enable the content-type detection, please remove any usage of this option.

        :schema: MiddlewareSpecContentType
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__9a565c48da0c56380c5e1bfebf1880a4f56e4a1b11df709fe7ae1f4eba06845a)
            check_type(argname="argument auto_detect", value=auto_detect, expected_type=type_hints["auto_detect"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if auto_detect is not None:
            self._values["auto_detect"] = auto_detect

    @builtins.property
    def auto_detect(self) -> typing.Optional[builtins.bool]:
        '''AutoDetect specifies whether to let the ``Content-Type`` header, if it has not been set by the backend, be automatically set to a value derived from the contents of the response.

        Deprecated: AutoDetect option is deprecated, Content-Type middleware is only meant to be used to enable the content-type detection, please remove any usage of this option.

        :schema: MiddlewareSpecContentType#autoDetect
        '''
        result = self._values.get("auto_detect")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecContentType(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecDigestAuth",
    jsii_struct_bases=[],
    name_mapping={
        "header_field": "headerField",
        "realm": "realm",
        "remove_header": "removeHeader",
        "secret": "secret",
    },
)
class MiddlewareSpecDigestAuth:
    def __init__(
        self,
        *,
        header_field: typing.Optional[builtins.str] = None,
        realm: typing.Optional[builtins.str] = None,
        remove_header: typing.Optional[builtins.bool] = None,
        secret: typing.Optional[builtins.str] = None,
    ) -> None:
        '''DigestAuth holds the digest auth middleware configuration.

        This middleware restricts access to your services to known users.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/digestauth/

        :param header_field: HeaderField defines a header field to store the authenticated user. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/digestauth/#headerfield
        :param realm: Realm allows the protected resources on a server to be partitioned into a set of protection spaces, each with its own authentication scheme. Default: traefik.
        :param remove_header: RemoveHeader defines whether to remove the authorization header before forwarding the request to the backend.
        :param secret: Secret is the name of the referenced Kubernetes Secret containing user credentials.

        :schema: MiddlewareSpecDigestAuth
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__a0fdccef1cc128524a7a3294bccaaa2345713e23fe355cbfbea4c1d717a6e363)
            check_type(argname="argument header_field", value=header_field, expected_type=type_hints["header_field"])
            check_type(argname="argument realm", value=realm, expected_type=type_hints["realm"])
            check_type(argname="argument remove_header", value=remove_header, expected_type=type_hints["remove_header"])
            check_type(argname="argument secret", value=secret, expected_type=type_hints["secret"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if header_field is not None:
            self._values["header_field"] = header_field
        if realm is not None:
            self._values["realm"] = realm
        if remove_header is not None:
            self._values["remove_header"] = remove_header
        if secret is not None:
            self._values["secret"] = secret

    @builtins.property
    def header_field(self) -> typing.Optional[builtins.str]:
        '''HeaderField defines a header field to store the authenticated user.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/digestauth/#headerfield

        :schema: MiddlewareSpecDigestAuth#headerField
        '''
        result = self._values.get("header_field")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def realm(self) -> typing.Optional[builtins.str]:
        '''Realm allows the protected resources on a server to be partitioned into a set of protection spaces, each with its own authentication scheme.

        Default: traefik.

        :schema: MiddlewareSpecDigestAuth#realm
        '''
        result = self._values.get("realm")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def remove_header(self) -> typing.Optional[builtins.bool]:
        '''RemoveHeader defines whether to remove the authorization header before forwarding the request to the backend.

        :schema: MiddlewareSpecDigestAuth#removeHeader
        '''
        result = self._values.get("remove_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def secret(self) -> typing.Optional[builtins.str]:
        '''Secret is the name of the referenced Kubernetes Secret containing user credentials.

        :schema: MiddlewareSpecDigestAuth#secret
        '''
        result = self._values.get("secret")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecDigestAuth(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecEncodedCharacters",
    jsii_struct_bases=[],
    name_mapping={
        "allow_encoded_back_slash": "allowEncodedBackSlash",
        "allow_encoded_hash": "allowEncodedHash",
        "allow_encoded_null_character": "allowEncodedNullCharacter",
        "allow_encoded_percent": "allowEncodedPercent",
        "allow_encoded_question_mark": "allowEncodedQuestionMark",
        "allow_encoded_semicolon": "allowEncodedSemicolon",
        "allow_encoded_slash": "allowEncodedSlash",
    },
)
class MiddlewareSpecEncodedCharacters:
    def __init__(
        self,
        *,
        allow_encoded_back_slash: typing.Optional[builtins.bool] = None,
        allow_encoded_hash: typing.Optional[builtins.bool] = None,
        allow_encoded_null_character: typing.Optional[builtins.bool] = None,
        allow_encoded_percent: typing.Optional[builtins.bool] = None,
        allow_encoded_question_mark: typing.Optional[builtins.bool] = None,
        allow_encoded_semicolon: typing.Optional[builtins.bool] = None,
        allow_encoded_slash: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''EncodedCharacters configures which encoded characters are allowed in the request path.

        :param allow_encoded_back_slash: AllowEncodedBackSlash defines whether requests with encoded back slash characters in the path are allowed.
        :param allow_encoded_hash: AllowEncodedHash defines whether requests with encoded hash characters in the path are allowed.
        :param allow_encoded_null_character: AllowEncodedNullCharacter defines whether requests with encoded null characters in the path are allowed.
        :param allow_encoded_percent: AllowEncodedPercent defines whether requests with encoded percent characters in the path are allowed.
        :param allow_encoded_question_mark: AllowEncodedQuestionMark defines whether requests with encoded question mark characters in the path are allowed.
        :param allow_encoded_semicolon: AllowEncodedSemicolon defines whether requests with encoded semicolon characters in the path are allowed.
        :param allow_encoded_slash: AllowEncodedSlash defines whether requests with encoded slash characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__28791eeb44324797f98185056da983d1c59a2fcef5f7201c158688a076d2bf73)
            check_type(argname="argument allow_encoded_back_slash", value=allow_encoded_back_slash, expected_type=type_hints["allow_encoded_back_slash"])
            check_type(argname="argument allow_encoded_hash", value=allow_encoded_hash, expected_type=type_hints["allow_encoded_hash"])
            check_type(argname="argument allow_encoded_null_character", value=allow_encoded_null_character, expected_type=type_hints["allow_encoded_null_character"])
            check_type(argname="argument allow_encoded_percent", value=allow_encoded_percent, expected_type=type_hints["allow_encoded_percent"])
            check_type(argname="argument allow_encoded_question_mark", value=allow_encoded_question_mark, expected_type=type_hints["allow_encoded_question_mark"])
            check_type(argname="argument allow_encoded_semicolon", value=allow_encoded_semicolon, expected_type=type_hints["allow_encoded_semicolon"])
            check_type(argname="argument allow_encoded_slash", value=allow_encoded_slash, expected_type=type_hints["allow_encoded_slash"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if allow_encoded_back_slash is not None:
            self._values["allow_encoded_back_slash"] = allow_encoded_back_slash
        if allow_encoded_hash is not None:
            self._values["allow_encoded_hash"] = allow_encoded_hash
        if allow_encoded_null_character is not None:
            self._values["allow_encoded_null_character"] = allow_encoded_null_character
        if allow_encoded_percent is not None:
            self._values["allow_encoded_percent"] = allow_encoded_percent
        if allow_encoded_question_mark is not None:
            self._values["allow_encoded_question_mark"] = allow_encoded_question_mark
        if allow_encoded_semicolon is not None:
            self._values["allow_encoded_semicolon"] = allow_encoded_semicolon
        if allow_encoded_slash is not None:
            self._values["allow_encoded_slash"] = allow_encoded_slash

    @builtins.property
    def allow_encoded_back_slash(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedBackSlash defines whether requests with encoded back slash characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedBackSlash
        '''
        result = self._values.get("allow_encoded_back_slash")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_hash(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedHash defines whether requests with encoded hash characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedHash
        '''
        result = self._values.get("allow_encoded_hash")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_null_character(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedNullCharacter defines whether requests with encoded null characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedNullCharacter
        '''
        result = self._values.get("allow_encoded_null_character")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_percent(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedPercent defines whether requests with encoded percent characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedPercent
        '''
        result = self._values.get("allow_encoded_percent")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_question_mark(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedQuestionMark defines whether requests with encoded question mark characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedQuestionMark
        '''
        result = self._values.get("allow_encoded_question_mark")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_semicolon(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedSemicolon defines whether requests with encoded semicolon characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedSemicolon
        '''
        result = self._values.get("allow_encoded_semicolon")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allow_encoded_slash(self) -> typing.Optional[builtins.bool]:
        '''AllowEncodedSlash defines whether requests with encoded slash characters in the path are allowed.

        :schema: MiddlewareSpecEncodedCharacters#allowEncodedSlash
        '''
        result = self._values.get("allow_encoded_slash")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecEncodedCharacters(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrors",
    jsii_struct_bases=[],
    name_mapping={
        "error_request_headers": "errorRequestHeaders",
        "query": "query",
        "service": "service",
        "status": "status",
        "status_rewrites": "statusRewrites",
    },
)
class MiddlewareSpecErrors:
    def __init__(
        self,
        *,
        error_request_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        query: typing.Optional[builtins.str] = None,
        service: typing.Optional[typing.Union["MiddlewareSpecErrorsService", typing.Dict[builtins.str, typing.Any]]] = None,
        status: typing.Optional[typing.Sequence[builtins.str]] = None,
        status_rewrites: typing.Optional[typing.Mapping[builtins.str, jsii.Number]] = None,
    ) -> None:
        '''ErrorPage holds the custom error middleware configuration.

        This middleware returns a custom page in lieu of the default, according to configured ranges of HTTP Status codes.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/

        :param error_request_headers: ErrorRequestHeaders defines the list of request headers forwarded to the error page service. When nil (not set), all original request headers are forwarded. Set to an empty list to forward no headers, or list specific headers to forward only those.
        :param query: Query defines the URL for the error page (hosted by service). The {status} variable can be used in order to insert the status code in the URL. The {originalStatus} variable can be used in order to insert the upstream status code in the URL. The {url} variable can be used in order to insert the escaped request URL.
        :param service: Service defines the reference to a Kubernetes Service that will serve the error page. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/#service
        :param status: Status defines which status or range of statuses should result in an error page. It can be either a status code as a number (500), as multiple comma-separated numbers (500,502), as ranges by separating two codes with a dash (500-599), or a combination of the two (404,418,500-599).
        :param status_rewrites: StatusRewrites defines a mapping of status codes that should be returned instead of the original error status codes. For example: "418": 404 or "410-418": 404

        :schema: MiddlewareSpecErrors
        '''
        if isinstance(service, dict):
            service = MiddlewareSpecErrorsService(**service)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__cd803f326a62be408b9be954613601c5ffbf401c7e6ccc28baab83aacb829b4b)
            check_type(argname="argument error_request_headers", value=error_request_headers, expected_type=type_hints["error_request_headers"])
            check_type(argname="argument query", value=query, expected_type=type_hints["query"])
            check_type(argname="argument service", value=service, expected_type=type_hints["service"])
            check_type(argname="argument status", value=status, expected_type=type_hints["status"])
            check_type(argname="argument status_rewrites", value=status_rewrites, expected_type=type_hints["status_rewrites"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if error_request_headers is not None:
            self._values["error_request_headers"] = error_request_headers
        if query is not None:
            self._values["query"] = query
        if service is not None:
            self._values["service"] = service
        if status is not None:
            self._values["status"] = status
        if status_rewrites is not None:
            self._values["status_rewrites"] = status_rewrites

    @builtins.property
    def error_request_headers(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ErrorRequestHeaders defines the list of request headers forwarded to the error page service.

        When nil (not set), all original request headers are forwarded.
        Set to an empty list to forward no headers, or list specific headers to forward only those.

        :schema: MiddlewareSpecErrors#errorRequestHeaders
        '''
        result = self._values.get("error_request_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def query(self) -> typing.Optional[builtins.str]:
        '''Query defines the URL for the error page (hosted by service).

        The {status} variable can be used in order to insert the status code in the URL.
        The {originalStatus} variable can be used in order to insert the upstream status code in the URL.
        The {url} variable can be used in order to insert the escaped request URL.

        :schema: MiddlewareSpecErrors#query
        '''
        result = self._values.get("query")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def service(self) -> typing.Optional["MiddlewareSpecErrorsService"]:
        '''Service defines the reference to a Kubernetes Service that will serve the error page.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/#service

        :schema: MiddlewareSpecErrors#service
        '''
        result = self._values.get("service")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsService"], result)

    @builtins.property
    def status(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Status defines which status or range of statuses should result in an error page.

        It can be either a status code as a number (500),
        as multiple comma-separated numbers (500,502),
        as ranges by separating two codes with a dash (500-599),
        or a combination of the two (404,418,500-599).

        :schema: MiddlewareSpecErrors#status
        '''
        result = self._values.get("status")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def status_rewrites(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, jsii.Number]]:
        '''StatusRewrites defines a mapping of status codes that should be returned instead of the original error status codes.

        For example: "418": 404 or "410-418": 404

        :schema: MiddlewareSpecErrors#statusRewrites
        '''
        result = self._values.get("status_rewrites")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, jsii.Number]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrors(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsService",
    jsii_struct_bases=[],
    name_mapping={
        "name": "name",
        "health_check": "healthCheck",
        "kind": "kind",
        "middlewares": "middlewares",
        "namespace": "namespace",
        "native_lb": "nativeLb",
        "node_port_lb": "nodePortLb",
        "pass_host_header": "passHostHeader",
        "passive_health_check": "passiveHealthCheck",
        "port": "port",
        "response_forwarding": "responseForwarding",
        "scheme": "scheme",
        "servers_transport": "serversTransport",
        "sticky": "sticky",
        "strategy": "strategy",
        "weight": "weight",
    },
)
class MiddlewareSpecErrorsService:
    def __init__(
        self,
        *,
        name: builtins.str,
        health_check: typing.Optional[typing.Union["MiddlewareSpecErrorsServiceHealthCheck", typing.Dict[builtins.str, typing.Any]]] = None,
        kind: typing.Optional["MiddlewareSpecErrorsServiceKind"] = None,
        middlewares: typing.Optional[typing.Sequence[typing.Union["MiddlewareSpecErrorsServiceMiddlewares", typing.Dict[builtins.str, typing.Any]]]] = None,
        namespace: typing.Optional[builtins.str] = None,
        native_lb: typing.Optional[builtins.bool] = None,
        node_port_lb: typing.Optional[builtins.bool] = None,
        pass_host_header: typing.Optional[builtins.bool] = None,
        passive_health_check: typing.Optional[typing.Union["MiddlewareSpecErrorsServicePassiveHealthCheck", typing.Dict[builtins.str, typing.Any]]] = None,
        port: typing.Optional["MiddlewareSpecErrorsServicePort"] = None,
        response_forwarding: typing.Optional[typing.Union["MiddlewareSpecErrorsServiceResponseForwarding", typing.Dict[builtins.str, typing.Any]]] = None,
        scheme: typing.Optional[builtins.str] = None,
        servers_transport: typing.Optional[builtins.str] = None,
        sticky: typing.Optional[typing.Union["MiddlewareSpecErrorsServiceSticky", typing.Dict[builtins.str, typing.Any]]] = None,
        strategy: typing.Optional["MiddlewareSpecErrorsServiceStrategy"] = None,
        weight: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''Service defines the reference to a Kubernetes Service that will serve the error page.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/errorpages/#service

        :param name: Name defines the name of the referenced Kubernetes Service or TraefikService. The differentiation between the two is specified in the Kind field.
        :param health_check: Healthcheck defines health checks for ExternalName services.
        :param kind: Kind defines the kind of the Service.
        :param middlewares: Middlewares defines the list of references to Middleware resources to apply to the service.
        :param namespace: Namespace defines the namespace of the referenced Kubernetes Service or TraefikService.
        :param native_lb: NativeLB controls, when creating the load-balancer, whether the LB's children are directly the pods IPs or if the only child is the Kubernetes Service clusterIP. The Kubernetes Service itself does load-balance to the pods. By default, NativeLB is false.
        :param node_port_lb: NodePortLB controls, when creating the load-balancer, whether the LB's children are directly the nodes internal IPs using the nodePort when the service type is NodePort. It allows services to be reachable when Traefik runs externally from the Kubernetes cluster but within the same network of the nodes. By default, NodePortLB is false.
        :param pass_host_header: PassHostHeader defines whether the client Host header is forwarded to the upstream Kubernetes Service. By default, passHostHeader is true.
        :param passive_health_check: PassiveHealthCheck defines passive health checks for ExternalName services.
        :param port: Port defines the port of a Kubernetes Service. This can be a reference to a named port.
        :param response_forwarding: ResponseForwarding defines how Traefik forwards the response from the upstream Kubernetes Service to the client.
        :param scheme: Scheme defines the scheme to use for the request to the upstream Kubernetes Service. It defaults to https when Kubernetes Service port is 443, http otherwise.
        :param servers_transport: ServersTransport defines the name of ServersTransport resource to use. It allows to configure the transport between Traefik and your servers. Can only be used on a Kubernetes Service.
        :param sticky: Sticky defines the sticky sessions configuration. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/load-balancing/service/#sticky-sessions
        :param strategy: Strategy defines the load balancing strategy between the servers. Supported values are: wrr (Weighed round-robin), p2c (Power of two choices), hrw (Highest Random Weight), and leasttime (Least-Time). RoundRobin value is deprecated and supported for backward compatibility.
        :param weight: Weight defines the weight and should only be specified when Name references a TraefikService object (and to be precise, one that embeds a Weighted Round Robin).

        :schema: MiddlewareSpecErrorsService
        '''
        if isinstance(health_check, dict):
            health_check = MiddlewareSpecErrorsServiceHealthCheck(**health_check)
        if isinstance(passive_health_check, dict):
            passive_health_check = MiddlewareSpecErrorsServicePassiveHealthCheck(**passive_health_check)
        if isinstance(response_forwarding, dict):
            response_forwarding = MiddlewareSpecErrorsServiceResponseForwarding(**response_forwarding)
        if isinstance(sticky, dict):
            sticky = MiddlewareSpecErrorsServiceSticky(**sticky)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__691ddb4a285d0895d2370ad654ae3a13cd178529877f33a06bfccaa41b57817f)
            check_type(argname="argument name", value=name, expected_type=type_hints["name"])
            check_type(argname="argument health_check", value=health_check, expected_type=type_hints["health_check"])
            check_type(argname="argument kind", value=kind, expected_type=type_hints["kind"])
            check_type(argname="argument middlewares", value=middlewares, expected_type=type_hints["middlewares"])
            check_type(argname="argument namespace", value=namespace, expected_type=type_hints["namespace"])
            check_type(argname="argument native_lb", value=native_lb, expected_type=type_hints["native_lb"])
            check_type(argname="argument node_port_lb", value=node_port_lb, expected_type=type_hints["node_port_lb"])
            check_type(argname="argument pass_host_header", value=pass_host_header, expected_type=type_hints["pass_host_header"])
            check_type(argname="argument passive_health_check", value=passive_health_check, expected_type=type_hints["passive_health_check"])
            check_type(argname="argument port", value=port, expected_type=type_hints["port"])
            check_type(argname="argument response_forwarding", value=response_forwarding, expected_type=type_hints["response_forwarding"])
            check_type(argname="argument scheme", value=scheme, expected_type=type_hints["scheme"])
            check_type(argname="argument servers_transport", value=servers_transport, expected_type=type_hints["servers_transport"])
            check_type(argname="argument sticky", value=sticky, expected_type=type_hints["sticky"])
            check_type(argname="argument strategy", value=strategy, expected_type=type_hints["strategy"])
            check_type(argname="argument weight", value=weight, expected_type=type_hints["weight"])
        self._values: typing.Dict[builtins.str, typing.Any] = {
            "name": name,
        }
        if health_check is not None:
            self._values["health_check"] = health_check
        if kind is not None:
            self._values["kind"] = kind
        if middlewares is not None:
            self._values["middlewares"] = middlewares
        if namespace is not None:
            self._values["namespace"] = namespace
        if native_lb is not None:
            self._values["native_lb"] = native_lb
        if node_port_lb is not None:
            self._values["node_port_lb"] = node_port_lb
        if pass_host_header is not None:
            self._values["pass_host_header"] = pass_host_header
        if passive_health_check is not None:
            self._values["passive_health_check"] = passive_health_check
        if port is not None:
            self._values["port"] = port
        if response_forwarding is not None:
            self._values["response_forwarding"] = response_forwarding
        if scheme is not None:
            self._values["scheme"] = scheme
        if servers_transport is not None:
            self._values["servers_transport"] = servers_transport
        if sticky is not None:
            self._values["sticky"] = sticky
        if strategy is not None:
            self._values["strategy"] = strategy
        if weight is not None:
            self._values["weight"] = weight

    @builtins.property
    def name(self) -> builtins.str:
        '''Name defines the name of the referenced Kubernetes Service or TraefikService.

        The differentiation between the two is specified in the Kind field.

        :schema: MiddlewareSpecErrorsService#name
        '''
        result = self._values.get("name")
        assert result is not None, "Required property 'name' is missing"
        return typing.cast(builtins.str, result)

    @builtins.property
    def health_check(self) -> typing.Optional["MiddlewareSpecErrorsServiceHealthCheck"]:
        '''Healthcheck defines health checks for ExternalName services.

        :schema: MiddlewareSpecErrorsService#healthCheck
        '''
        result = self._values.get("health_check")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceHealthCheck"], result)

    @builtins.property
    def kind(self) -> typing.Optional["MiddlewareSpecErrorsServiceKind"]:
        '''Kind defines the kind of the Service.

        :schema: MiddlewareSpecErrorsService#kind
        '''
        result = self._values.get("kind")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceKind"], result)

    @builtins.property
    def middlewares(
        self,
    ) -> typing.Optional[typing.List["MiddlewareSpecErrorsServiceMiddlewares"]]:
        '''Middlewares defines the list of references to Middleware resources to apply to the service.

        :schema: MiddlewareSpecErrorsService#middlewares
        '''
        result = self._values.get("middlewares")
        return typing.cast(typing.Optional[typing.List["MiddlewareSpecErrorsServiceMiddlewares"]], result)

    @builtins.property
    def namespace(self) -> typing.Optional[builtins.str]:
        '''Namespace defines the namespace of the referenced Kubernetes Service or TraefikService.

        :schema: MiddlewareSpecErrorsService#namespace
        '''
        result = self._values.get("namespace")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def native_lb(self) -> typing.Optional[builtins.bool]:
        '''NativeLB controls, when creating the load-balancer, whether the LB's children are directly the pods IPs or if the only child is the Kubernetes Service clusterIP.

        The Kubernetes Service itself does load-balance to the pods.
        By default, NativeLB is false.

        :schema: MiddlewareSpecErrorsService#nativeLB
        '''
        result = self._values.get("native_lb")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def node_port_lb(self) -> typing.Optional[builtins.bool]:
        '''NodePortLB controls, when creating the load-balancer, whether the LB's children are directly the nodes internal IPs using the nodePort when the service type is NodePort.

        It allows services to be reachable when Traefik runs externally from the Kubernetes cluster but within the same network of the nodes.
        By default, NodePortLB is false.

        :schema: MiddlewareSpecErrorsService#nodePortLB
        '''
        result = self._values.get("node_port_lb")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def pass_host_header(self) -> typing.Optional[builtins.bool]:
        '''PassHostHeader defines whether the client Host header is forwarded to the upstream Kubernetes Service.

        By default, passHostHeader is true.

        :schema: MiddlewareSpecErrorsService#passHostHeader
        '''
        result = self._values.get("pass_host_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def passive_health_check(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServicePassiveHealthCheck"]:
        '''PassiveHealthCheck defines passive health checks for ExternalName services.

        :schema: MiddlewareSpecErrorsService#passiveHealthCheck
        '''
        result = self._values.get("passive_health_check")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServicePassiveHealthCheck"], result)

    @builtins.property
    def port(self) -> typing.Optional["MiddlewareSpecErrorsServicePort"]:
        '''Port defines the port of a Kubernetes Service.

        This can be a reference to a named port.

        :schema: MiddlewareSpecErrorsService#port
        '''
        result = self._values.get("port")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServicePort"], result)

    @builtins.property
    def response_forwarding(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServiceResponseForwarding"]:
        '''ResponseForwarding defines how Traefik forwards the response from the upstream Kubernetes Service to the client.

        :schema: MiddlewareSpecErrorsService#responseForwarding
        '''
        result = self._values.get("response_forwarding")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceResponseForwarding"], result)

    @builtins.property
    def scheme(self) -> typing.Optional[builtins.str]:
        '''Scheme defines the scheme to use for the request to the upstream Kubernetes Service.

        It defaults to https when Kubernetes Service port is 443, http otherwise.

        :schema: MiddlewareSpecErrorsService#scheme
        '''
        result = self._values.get("scheme")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def servers_transport(self) -> typing.Optional[builtins.str]:
        '''ServersTransport defines the name of ServersTransport resource to use.

        It allows to configure the transport between Traefik and your servers.
        Can only be used on a Kubernetes Service.

        :schema: MiddlewareSpecErrorsService#serversTransport
        '''
        result = self._values.get("servers_transport")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def sticky(self) -> typing.Optional["MiddlewareSpecErrorsServiceSticky"]:
        '''Sticky defines the sticky sessions configuration.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/load-balancing/service/#sticky-sessions

        :schema: MiddlewareSpecErrorsService#sticky
        '''
        result = self._values.get("sticky")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceSticky"], result)

    @builtins.property
    def strategy(self) -> typing.Optional["MiddlewareSpecErrorsServiceStrategy"]:
        '''Strategy defines the load balancing strategy between the servers.

        Supported values are: wrr (Weighed round-robin), p2c (Power of two choices), hrw (Highest Random Weight), and leasttime (Least-Time).
        RoundRobin value is deprecated and supported for backward compatibility.

        :schema: MiddlewareSpecErrorsService#strategy
        '''
        result = self._values.get("strategy")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceStrategy"], result)

    @builtins.property
    def weight(self) -> typing.Optional[jsii.Number]:
        '''Weight defines the weight and should only be specified when Name references a TraefikService object (and to be precise, one that embeds a Weighted Round Robin).

        :schema: MiddlewareSpecErrorsService#weight
        '''
        result = self._values.get("weight")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsService(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceHealthCheck",
    jsii_struct_bases=[],
    name_mapping={
        "follow_redirects": "followRedirects",
        "headers": "headers",
        "hostname": "hostname",
        "interval": "interval",
        "method": "method",
        "mode": "mode",
        "path": "path",
        "port": "port",
        "scheme": "scheme",
        "status": "status",
        "timeout": "timeout",
        "unhealthy_interval": "unhealthyInterval",
    },
)
class MiddlewareSpecErrorsServiceHealthCheck:
    def __init__(
        self,
        *,
        follow_redirects: typing.Optional[builtins.bool] = None,
        headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
        hostname: typing.Optional[builtins.str] = None,
        interval: typing.Optional["MiddlewareSpecErrorsServiceHealthCheckInterval"] = None,
        method: typing.Optional[builtins.str] = None,
        mode: typing.Optional[builtins.str] = None,
        path: typing.Optional[builtins.str] = None,
        port: typing.Optional[jsii.Number] = None,
        scheme: typing.Optional[builtins.str] = None,
        status: typing.Optional[jsii.Number] = None,
        timeout: typing.Optional["MiddlewareSpecErrorsServiceHealthCheckTimeout"] = None,
        unhealthy_interval: typing.Optional["MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval"] = None,
    ) -> None:
        '''Healthcheck defines health checks for ExternalName services.

        :param follow_redirects: FollowRedirects defines whether redirects should be followed during the health check calls. Default: true
        :param headers: Headers defines custom headers to be sent to the health check endpoint.
        :param hostname: Hostname defines the value of hostname in the Host header of the health check request.
        :param interval: Interval defines the frequency of the health check calls for healthy targets. Default: 30s
        :param method: Method defines the healthcheck method.
        :param mode: Mode defines the health check mode. If defined to grpc, will use the gRPC health check protocol to probe the server. Default: http
        :param path: Path defines the server URL path for the health check endpoint.
        :param port: Port defines the server URL port for the health check endpoint.
        :param scheme: Scheme replaces the server URL scheme for the health check endpoint.
        :param status: Status defines the expected HTTP status code of the response to the health check request.
        :param timeout: Timeout defines the maximum duration Traefik will wait for a health check request before considering the server unhealthy. Default: 5s
        :param unhealthy_interval: UnhealthyInterval defines the frequency of the health check calls for unhealthy targets. When UnhealthyInterval is not defined, it defaults to the Interval value. Default: 30s

        :schema: MiddlewareSpecErrorsServiceHealthCheck
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__d96cc9e0a8a28e13ccd2f8302736388384c6282394d8c80fab75dc61de037142)
            check_type(argname="argument follow_redirects", value=follow_redirects, expected_type=type_hints["follow_redirects"])
            check_type(argname="argument headers", value=headers, expected_type=type_hints["headers"])
            check_type(argname="argument hostname", value=hostname, expected_type=type_hints["hostname"])
            check_type(argname="argument interval", value=interval, expected_type=type_hints["interval"])
            check_type(argname="argument method", value=method, expected_type=type_hints["method"])
            check_type(argname="argument mode", value=mode, expected_type=type_hints["mode"])
            check_type(argname="argument path", value=path, expected_type=type_hints["path"])
            check_type(argname="argument port", value=port, expected_type=type_hints["port"])
            check_type(argname="argument scheme", value=scheme, expected_type=type_hints["scheme"])
            check_type(argname="argument status", value=status, expected_type=type_hints["status"])
            check_type(argname="argument timeout", value=timeout, expected_type=type_hints["timeout"])
            check_type(argname="argument unhealthy_interval", value=unhealthy_interval, expected_type=type_hints["unhealthy_interval"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if follow_redirects is not None:
            self._values["follow_redirects"] = follow_redirects
        if headers is not None:
            self._values["headers"] = headers
        if hostname is not None:
            self._values["hostname"] = hostname
        if interval is not None:
            self._values["interval"] = interval
        if method is not None:
            self._values["method"] = method
        if mode is not None:
            self._values["mode"] = mode
        if path is not None:
            self._values["path"] = path
        if port is not None:
            self._values["port"] = port
        if scheme is not None:
            self._values["scheme"] = scheme
        if status is not None:
            self._values["status"] = status
        if timeout is not None:
            self._values["timeout"] = timeout
        if unhealthy_interval is not None:
            self._values["unhealthy_interval"] = unhealthy_interval

    @builtins.property
    def follow_redirects(self) -> typing.Optional[builtins.bool]:
        '''FollowRedirects defines whether redirects should be followed during the health check calls.

        Default: true

        :schema: MiddlewareSpecErrorsServiceHealthCheck#followRedirects
        '''
        result = self._values.get("follow_redirects")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def headers(self) -> typing.Optional[typing.Mapping[builtins.str, builtins.str]]:
        '''Headers defines custom headers to be sent to the health check endpoint.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#headers
        '''
        result = self._values.get("headers")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, builtins.str]], result)

    @builtins.property
    def hostname(self) -> typing.Optional[builtins.str]:
        '''Hostname defines the value of hostname in the Host header of the health check request.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#hostname
        '''
        result = self._values.get("hostname")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def interval(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServiceHealthCheckInterval"]:
        '''Interval defines the frequency of the health check calls for healthy targets.

        Default: 30s

        :schema: MiddlewareSpecErrorsServiceHealthCheck#interval
        '''
        result = self._values.get("interval")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceHealthCheckInterval"], result)

    @builtins.property
    def method(self) -> typing.Optional[builtins.str]:
        '''Method defines the healthcheck method.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#method
        '''
        result = self._values.get("method")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def mode(self) -> typing.Optional[builtins.str]:
        '''Mode defines the health check mode.

        If defined to grpc, will use the gRPC health check protocol to probe the server.
        Default: http

        :schema: MiddlewareSpecErrorsServiceHealthCheck#mode
        '''
        result = self._values.get("mode")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def path(self) -> typing.Optional[builtins.str]:
        '''Path defines the server URL path for the health check endpoint.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#path
        '''
        result = self._values.get("path")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def port(self) -> typing.Optional[jsii.Number]:
        '''Port defines the server URL port for the health check endpoint.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#port
        '''
        result = self._values.get("port")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def scheme(self) -> typing.Optional[builtins.str]:
        '''Scheme replaces the server URL scheme for the health check endpoint.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#scheme
        '''
        result = self._values.get("scheme")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def status(self) -> typing.Optional[jsii.Number]:
        '''Status defines the expected HTTP status code of the response to the health check request.

        :schema: MiddlewareSpecErrorsServiceHealthCheck#status
        '''
        result = self._values.get("status")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def timeout(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServiceHealthCheckTimeout"]:
        '''Timeout defines the maximum duration Traefik will wait for a health check request before considering the server unhealthy.

        Default: 5s

        :schema: MiddlewareSpecErrorsServiceHealthCheck#timeout
        '''
        result = self._values.get("timeout")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceHealthCheckTimeout"], result)

    @builtins.property
    def unhealthy_interval(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval"]:
        '''UnhealthyInterval defines the frequency of the health check calls for unhealthy targets.

        When UnhealthyInterval is not defined, it defaults to the Interval value.
        Default: 30s

        :schema: MiddlewareSpecErrorsServiceHealthCheck#unhealthyInterval
        '''
        result = self._values.get("unhealthy_interval")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServiceHealthCheck(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecErrorsServiceHealthCheckInterval(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceHealthCheckInterval",
):
    '''Interval defines the frequency of the health check calls for healthy targets.

    Default: 30s

    :schema: MiddlewareSpecErrorsServiceHealthCheckInterval
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__9138f678f44c2f8eda1c18bebd9a157c1cb4799fbb8fd70041a82a1fdd6cd975)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckInterval", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__4aaf6703add54d8566255eba74475df9c159845ef8a8f7d871a6e68f001d35a5)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckInterval", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecErrorsServiceHealthCheckTimeout(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceHealthCheckTimeout",
):
    '''Timeout defines the maximum duration Traefik will wait for a health check request before considering the server unhealthy.

    Default: 5s

    :schema: MiddlewareSpecErrorsServiceHealthCheckTimeout
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__2b63f54a82b50c3718eba56b88867cd8fb45f9cd58c5efc693ab6ef5edc78217)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckTimeout", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b824d66a211f7a80ecccf8c0a6c6d5623e77b44dff43896597aa646358dca1a8)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckTimeout", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval",
):
    '''UnhealthyInterval defines the frequency of the health check calls for unhealthy targets.

    When UnhealthyInterval is not defined, it defaults to the Interval value.
    Default: 30s

    :schema: MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b6edff1deb9009fe83b824242fc2bcac6ac9505f401c2619130c9a61f4db96d0)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__270f03c957fcf0bdd2ec1cf05696d9a957c644a36bd844585d9f598817094f9e)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.enum(jsii_type="iotraefik.MiddlewareSpecErrorsServiceKind")
class MiddlewareSpecErrorsServiceKind(enum.Enum):
    '''Kind defines the kind of the Service.

    :schema: MiddlewareSpecErrorsServiceKind
    '''

    SERVICE = "SERVICE"
    '''Service.'''
    TRAEFIK_SERVICE = "TRAEFIK_SERVICE"
    '''TraefikService.'''


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceMiddlewares",
    jsii_struct_bases=[],
    name_mapping={"name": "name", "namespace": "namespace"},
)
class MiddlewareSpecErrorsServiceMiddlewares:
    def __init__(
        self,
        *,
        name: builtins.str,
        namespace: typing.Optional[builtins.str] = None,
    ) -> None:
        '''MiddlewareRef is a reference to a Middleware resource.

        :param name: Name defines the name of the referenced Middleware resource.
        :param namespace: Namespace defines the namespace of the referenced Middleware resource.

        :schema: MiddlewareSpecErrorsServiceMiddlewares
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__d79cba40a0d43841d346e0e9506de74e20e3894b7a7cde95fad41ff75a63b46a)
            check_type(argname="argument name", value=name, expected_type=type_hints["name"])
            check_type(argname="argument namespace", value=namespace, expected_type=type_hints["namespace"])
        self._values: typing.Dict[builtins.str, typing.Any] = {
            "name": name,
        }
        if namespace is not None:
            self._values["namespace"] = namespace

    @builtins.property
    def name(self) -> builtins.str:
        '''Name defines the name of the referenced Middleware resource.

        :schema: MiddlewareSpecErrorsServiceMiddlewares#name
        '''
        result = self._values.get("name")
        assert result is not None, "Required property 'name' is missing"
        return typing.cast(builtins.str, result)

    @builtins.property
    def namespace(self) -> typing.Optional[builtins.str]:
        '''Namespace defines the namespace of the referenced Middleware resource.

        :schema: MiddlewareSpecErrorsServiceMiddlewares#namespace
        '''
        result = self._values.get("namespace")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServiceMiddlewares(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServicePassiveHealthCheck",
    jsii_struct_bases=[],
    name_mapping={
        "failure_window": "failureWindow",
        "max_failed_attempts": "maxFailedAttempts",
    },
)
class MiddlewareSpecErrorsServicePassiveHealthCheck:
    def __init__(
        self,
        *,
        failure_window: typing.Optional["MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow"] = None,
        max_failed_attempts: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''PassiveHealthCheck defines passive health checks for ExternalName services.

        :param failure_window: FailureWindow defines the time window during which the failed attempts must occur for the server to be marked as unhealthy. It also defines for how long the server will be considered unhealthy.
        :param max_failed_attempts: MaxFailedAttempts is the number of consecutive failed attempts allowed within the failure window before marking the server as unhealthy.

        :schema: MiddlewareSpecErrorsServicePassiveHealthCheck
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__294120ec0262f0c510523ffbb8c57c8692b7f032791ed0a4972a7bf27d61c74c)
            check_type(argname="argument failure_window", value=failure_window, expected_type=type_hints["failure_window"])
            check_type(argname="argument max_failed_attempts", value=max_failed_attempts, expected_type=type_hints["max_failed_attempts"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if failure_window is not None:
            self._values["failure_window"] = failure_window
        if max_failed_attempts is not None:
            self._values["max_failed_attempts"] = max_failed_attempts

    @builtins.property
    def failure_window(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow"]:
        '''FailureWindow defines the time window during which the failed attempts must occur for the server to be marked as unhealthy.

        It also defines for how long the server will be considered unhealthy.

        :schema: MiddlewareSpecErrorsServicePassiveHealthCheck#failureWindow
        '''
        result = self._values.get("failure_window")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow"], result)

    @builtins.property
    def max_failed_attempts(self) -> typing.Optional[jsii.Number]:
        '''MaxFailedAttempts is the number of consecutive failed attempts allowed within the failure window before marking the server as unhealthy.

        :schema: MiddlewareSpecErrorsServicePassiveHealthCheck#maxFailedAttempts
        '''
        result = self._values.get("max_failed_attempts")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServicePassiveHealthCheck(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow",
):
    '''FailureWindow defines the time window during which the failed attempts must occur for the server to be marked as unhealthy.

    It also defines for how long the server will be considered unhealthy.

    :schema: MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__26275306b7ce57b0bd8882a06387e805f9059649d273867602c797063493ac78)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__9820c63cd7682215c280ac217fb48efd8a6bf67931f426c9db891cf1616a51d8)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecErrorsServicePort(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecErrorsServicePort",
):
    '''Port defines the port of a Kubernetes Service.

    This can be a reference to a named port.

    :schema: MiddlewareSpecErrorsServicePort
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(cls, value: jsii.Number) -> "MiddlewareSpecErrorsServicePort":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b7fa447d4b5eab05f0a22688fcc868c950905aee5f30f406a9ea9c4764780aca)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServicePort", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(cls, value: builtins.str) -> "MiddlewareSpecErrorsServicePort":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__43ee3873c79a86025f6d9729ab0617b80d811c6f3e71191b96e26a1afca60b67)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecErrorsServicePort", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceResponseForwarding",
    jsii_struct_bases=[],
    name_mapping={"flush_interval": "flushInterval"},
)
class MiddlewareSpecErrorsServiceResponseForwarding:
    def __init__(self, *, flush_interval: typing.Optional[builtins.str] = None) -> None:
        '''ResponseForwarding defines how Traefik forwards the response from the upstream Kubernetes Service to the client.

        :param flush_interval: FlushInterval defines the interval, in milliseconds, in between flushes to the client while copying the response body. A negative value means to flush immediately after each write to the client. This configuration is ignored when ReverseProxy recognizes a response as a streaming response; for such responses, writes are flushed to the client immediately. Default: 100ms

        :schema: MiddlewareSpecErrorsServiceResponseForwarding
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__404b027a86db7b80901f161e9d5d7b797f6de7e2a529e3ba006fe5106920a1cd)
            check_type(argname="argument flush_interval", value=flush_interval, expected_type=type_hints["flush_interval"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if flush_interval is not None:
            self._values["flush_interval"] = flush_interval

    @builtins.property
    def flush_interval(self) -> typing.Optional[builtins.str]:
        '''FlushInterval defines the interval, in milliseconds, in between flushes to the client while copying the response body.

        A negative value means to flush immediately after each write to the client.
        This configuration is ignored when ReverseProxy recognizes a response as a streaming response;
        for such responses, writes are flushed to the client immediately.
        Default: 100ms

        :schema: MiddlewareSpecErrorsServiceResponseForwarding#flushInterval
        '''
        result = self._values.get("flush_interval")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServiceResponseForwarding(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceSticky",
    jsii_struct_bases=[],
    name_mapping={"cookie": "cookie"},
)
class MiddlewareSpecErrorsServiceSticky:
    def __init__(
        self,
        *,
        cookie: typing.Optional[typing.Union["MiddlewareSpecErrorsServiceStickyCookie", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''Sticky defines the sticky sessions configuration.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/load-balancing/service/#sticky-sessions

        :param cookie: Cookie defines the sticky cookie configuration.

        :schema: MiddlewareSpecErrorsServiceSticky
        '''
        if isinstance(cookie, dict):
            cookie = MiddlewareSpecErrorsServiceStickyCookie(**cookie)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8f801e1457a62300e93630b49225aa5872f4c3ace51dd068e85a5ebd9af1e7f9)
            check_type(argname="argument cookie", value=cookie, expected_type=type_hints["cookie"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if cookie is not None:
            self._values["cookie"] = cookie

    @builtins.property
    def cookie(self) -> typing.Optional["MiddlewareSpecErrorsServiceStickyCookie"]:
        '''Cookie defines the sticky cookie configuration.

        :schema: MiddlewareSpecErrorsServiceSticky#cookie
        '''
        result = self._values.get("cookie")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceStickyCookie"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServiceSticky(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecErrorsServiceStickyCookie",
    jsii_struct_bases=[],
    name_mapping={
        "domain": "domain",
        "http_only": "httpOnly",
        "max_age": "maxAge",
        "name": "name",
        "path": "path",
        "same_site": "sameSite",
        "secure": "secure",
    },
)
class MiddlewareSpecErrorsServiceStickyCookie:
    def __init__(
        self,
        *,
        domain: typing.Optional[builtins.str] = None,
        http_only: typing.Optional[builtins.bool] = None,
        max_age: typing.Optional[jsii.Number] = None,
        name: typing.Optional[builtins.str] = None,
        path: typing.Optional[builtins.str] = None,
        same_site: typing.Optional["MiddlewareSpecErrorsServiceStickyCookieSameSite"] = None,
        secure: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''Cookie defines the sticky cookie configuration.

        :param domain: Domain defines the host to which the cookie will be sent. More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie#domaindomain-value
        :param http_only: HTTPOnly defines whether the cookie can be accessed by client-side APIs, such as JavaScript.
        :param max_age: MaxAge defines the number of seconds until the cookie expires. When set to a negative number, the cookie expires immediately. When set to zero, the cookie never expires.
        :param name: Name defines the Cookie name.
        :param path: Path defines the path that must exist in the requested URL for the browser to send the Cookie header. When not provided the cookie will be sent on every request to the domain. More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie#pathpath-value
        :param same_site: SameSite defines the same site policy. More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie/SameSite
        :param secure: Secure defines whether the cookie can only be transmitted over an encrypted connection (i.e. HTTPS).

        :schema: MiddlewareSpecErrorsServiceStickyCookie
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__db7021f80eb6e50905d386b4a9a8a60caf259fc2d1ba73f3500960f362afc514)
            check_type(argname="argument domain", value=domain, expected_type=type_hints["domain"])
            check_type(argname="argument http_only", value=http_only, expected_type=type_hints["http_only"])
            check_type(argname="argument max_age", value=max_age, expected_type=type_hints["max_age"])
            check_type(argname="argument name", value=name, expected_type=type_hints["name"])
            check_type(argname="argument path", value=path, expected_type=type_hints["path"])
            check_type(argname="argument same_site", value=same_site, expected_type=type_hints["same_site"])
            check_type(argname="argument secure", value=secure, expected_type=type_hints["secure"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if domain is not None:
            self._values["domain"] = domain
        if http_only is not None:
            self._values["http_only"] = http_only
        if max_age is not None:
            self._values["max_age"] = max_age
        if name is not None:
            self._values["name"] = name
        if path is not None:
            self._values["path"] = path
        if same_site is not None:
            self._values["same_site"] = same_site
        if secure is not None:
            self._values["secure"] = secure

    @builtins.property
    def domain(self) -> typing.Optional[builtins.str]:
        '''Domain defines the host to which the cookie will be sent.

        More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie#domaindomain-value

        :schema: MiddlewareSpecErrorsServiceStickyCookie#domain
        '''
        result = self._values.get("domain")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def http_only(self) -> typing.Optional[builtins.bool]:
        '''HTTPOnly defines whether the cookie can be accessed by client-side APIs, such as JavaScript.

        :schema: MiddlewareSpecErrorsServiceStickyCookie#httpOnly
        '''
        result = self._values.get("http_only")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def max_age(self) -> typing.Optional[jsii.Number]:
        '''MaxAge defines the number of seconds until the cookie expires.

        When set to a negative number, the cookie expires immediately.
        When set to zero, the cookie never expires.

        :schema: MiddlewareSpecErrorsServiceStickyCookie#maxAge
        '''
        result = self._values.get("max_age")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def name(self) -> typing.Optional[builtins.str]:
        '''Name defines the Cookie name.

        :schema: MiddlewareSpecErrorsServiceStickyCookie#name
        '''
        result = self._values.get("name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def path(self) -> typing.Optional[builtins.str]:
        '''Path defines the path that must exist in the requested URL for the browser to send the Cookie header.

        When not provided the cookie will be sent on every request to the domain.
        More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie#pathpath-value

        :schema: MiddlewareSpecErrorsServiceStickyCookie#path
        '''
        result = self._values.get("path")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def same_site(
        self,
    ) -> typing.Optional["MiddlewareSpecErrorsServiceStickyCookieSameSite"]:
        '''SameSite defines the same site policy.

        More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie/SameSite

        :schema: MiddlewareSpecErrorsServiceStickyCookie#sameSite
        '''
        result = self._values.get("same_site")
        return typing.cast(typing.Optional["MiddlewareSpecErrorsServiceStickyCookieSameSite"], result)

    @builtins.property
    def secure(self) -> typing.Optional[builtins.bool]:
        '''Secure defines whether the cookie can only be transmitted over an encrypted connection (i.e. HTTPS).

        :schema: MiddlewareSpecErrorsServiceStickyCookie#secure
        '''
        result = self._values.get("secure")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecErrorsServiceStickyCookie(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.enum(jsii_type="iotraefik.MiddlewareSpecErrorsServiceStickyCookieSameSite")
class MiddlewareSpecErrorsServiceStickyCookieSameSite(enum.Enum):
    '''SameSite defines the same site policy.

    More info: https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Set-Cookie/SameSite

    :schema: MiddlewareSpecErrorsServiceStickyCookieSameSite
    '''

    NONE = "NONE"
    '''none.'''
    LAX = "LAX"
    '''lax.'''
    STRICT = "STRICT"
    '''strict.'''


@jsii.enum(jsii_type="iotraefik.MiddlewareSpecErrorsServiceStrategy")
class MiddlewareSpecErrorsServiceStrategy(enum.Enum):
    '''Strategy defines the load balancing strategy between the servers.

    Supported values are: wrr (Weighed round-robin), p2c (Power of two choices), hrw (Highest Random Weight), and leasttime (Least-Time).
    RoundRobin value is deprecated and supported for backward compatibility.

    :schema: MiddlewareSpecErrorsServiceStrategy
    '''

    WRR = "WRR"
    '''wrr.'''
    P2C = "P2C"
    '''p2c.'''
    HRW = "HRW"
    '''hrw.'''
    LEASTTIME = "LEASTTIME"
    '''leasttime.'''
    ROUND_ROBIN = "ROUND_ROBIN"
    '''RoundRobin.'''


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecForwardAuth",
    jsii_struct_bases=[],
    name_mapping={
        "add_auth_cookies_to_response": "addAuthCookiesToResponse",
        "address": "address",
        "auth_request_headers": "authRequestHeaders",
        "auth_response_headers": "authResponseHeaders",
        "auth_response_headers_regex": "authResponseHeadersRegex",
        "auth_signin_url": "authSigninUrl",
        "forward_body": "forwardBody",
        "header_field": "headerField",
        "max_body_size": "maxBodySize",
        "max_response_body_size": "maxResponseBodySize",
        "preserve_location_header": "preserveLocationHeader",
        "preserve_request_method": "preserveRequestMethod",
        "tls": "tls",
        "trust_forward_header": "trustForwardHeader",
    },
)
class MiddlewareSpecForwardAuth:
    def __init__(
        self,
        *,
        add_auth_cookies_to_response: typing.Optional[typing.Sequence[builtins.str]] = None,
        address: typing.Optional[builtins.str] = None,
        auth_request_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        auth_response_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        auth_response_headers_regex: typing.Optional[builtins.str] = None,
        auth_signin_url: typing.Optional[builtins.str] = None,
        forward_body: typing.Optional[builtins.bool] = None,
        header_field: typing.Optional[builtins.str] = None,
        max_body_size: typing.Optional[jsii.Number] = None,
        max_response_body_size: typing.Optional[jsii.Number] = None,
        preserve_location_header: typing.Optional[builtins.bool] = None,
        preserve_request_method: typing.Optional[builtins.bool] = None,
        tls: typing.Optional[typing.Union["MiddlewareSpecForwardAuthTls", typing.Dict[builtins.str, typing.Any]]] = None,
        trust_forward_header: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''ForwardAuth holds the forward auth middleware configuration.

        This middleware delegates the request authentication to a Service.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/

        :param add_auth_cookies_to_response: AddAuthCookiesToResponse defines the list of cookies to copy from the authentication server response to the response.
        :param address: Address defines the authentication server address.
        :param auth_request_headers: AuthRequestHeaders defines the list of the headers to copy from the request to the authentication server. If not set or empty then all request headers are passed.
        :param auth_response_headers: AuthResponseHeaders defines the list of headers to copy from the authentication server response and set on forwarded request, replacing any existing conflicting headers.
        :param auth_response_headers_regex: AuthResponseHeadersRegex defines the regex to match headers to copy from the authentication server response and set on forwarded request, after stripping all headers that match the regex. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/#authresponseheadersregex
        :param auth_signin_url: AuthSigninURL specifies the URL to redirect to when the authentication server returns 401 Unauthorized.
        :param forward_body: ForwardBody defines whether to send the request body to the authentication server.
        :param header_field: HeaderField defines a header field to store the authenticated user. More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/#headerfield
        :param max_body_size: MaxBodySize defines the maximum body size in bytes allowed to be forwarded to the authentication server.
        :param max_response_body_size: MaxResponseBodySize defines the maximum body size in bytes allowed in the response from the authentication server.
        :param preserve_location_header: PreserveLocationHeader defines whether to forward the Location header to the client as is or prefix it with the domain name of the authentication server.
        :param preserve_request_method: PreserveRequestMethod defines whether to preserve the original request method while forwarding the request to the authentication server.
        :param tls: TLS defines the configuration used to secure the connection to the authentication server.
        :param trust_forward_header: TrustForwardHeader defines whether to trust (ie: forward) all X-Forwarded-* headers. Deprecated: Use forwardedHeaders.trustedIPs at the EntryPoint level instead, and set trustForwardHeader to true on this middleware.

        :schema: MiddlewareSpecForwardAuth
        '''
        if isinstance(tls, dict):
            tls = MiddlewareSpecForwardAuthTls(**tls)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__e88dc306e102cce7643a966f283dfd4d67802cff69eedf8888eb35339e55a206)
            check_type(argname="argument add_auth_cookies_to_response", value=add_auth_cookies_to_response, expected_type=type_hints["add_auth_cookies_to_response"])
            check_type(argname="argument address", value=address, expected_type=type_hints["address"])
            check_type(argname="argument auth_request_headers", value=auth_request_headers, expected_type=type_hints["auth_request_headers"])
            check_type(argname="argument auth_response_headers", value=auth_response_headers, expected_type=type_hints["auth_response_headers"])
            check_type(argname="argument auth_response_headers_regex", value=auth_response_headers_regex, expected_type=type_hints["auth_response_headers_regex"])
            check_type(argname="argument auth_signin_url", value=auth_signin_url, expected_type=type_hints["auth_signin_url"])
            check_type(argname="argument forward_body", value=forward_body, expected_type=type_hints["forward_body"])
            check_type(argname="argument header_field", value=header_field, expected_type=type_hints["header_field"])
            check_type(argname="argument max_body_size", value=max_body_size, expected_type=type_hints["max_body_size"])
            check_type(argname="argument max_response_body_size", value=max_response_body_size, expected_type=type_hints["max_response_body_size"])
            check_type(argname="argument preserve_location_header", value=preserve_location_header, expected_type=type_hints["preserve_location_header"])
            check_type(argname="argument preserve_request_method", value=preserve_request_method, expected_type=type_hints["preserve_request_method"])
            check_type(argname="argument tls", value=tls, expected_type=type_hints["tls"])
            check_type(argname="argument trust_forward_header", value=trust_forward_header, expected_type=type_hints["trust_forward_header"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if add_auth_cookies_to_response is not None:
            self._values["add_auth_cookies_to_response"] = add_auth_cookies_to_response
        if address is not None:
            self._values["address"] = address
        if auth_request_headers is not None:
            self._values["auth_request_headers"] = auth_request_headers
        if auth_response_headers is not None:
            self._values["auth_response_headers"] = auth_response_headers
        if auth_response_headers_regex is not None:
            self._values["auth_response_headers_regex"] = auth_response_headers_regex
        if auth_signin_url is not None:
            self._values["auth_signin_url"] = auth_signin_url
        if forward_body is not None:
            self._values["forward_body"] = forward_body
        if header_field is not None:
            self._values["header_field"] = header_field
        if max_body_size is not None:
            self._values["max_body_size"] = max_body_size
        if max_response_body_size is not None:
            self._values["max_response_body_size"] = max_response_body_size
        if preserve_location_header is not None:
            self._values["preserve_location_header"] = preserve_location_header
        if preserve_request_method is not None:
            self._values["preserve_request_method"] = preserve_request_method
        if tls is not None:
            self._values["tls"] = tls
        if trust_forward_header is not None:
            self._values["trust_forward_header"] = trust_forward_header

    @builtins.property
    def add_auth_cookies_to_response(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AddAuthCookiesToResponse defines the list of cookies to copy from the authentication server response to the response.

        :schema: MiddlewareSpecForwardAuth#addAuthCookiesToResponse
        '''
        result = self._values.get("add_auth_cookies_to_response")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def address(self) -> typing.Optional[builtins.str]:
        '''Address defines the authentication server address.

        :schema: MiddlewareSpecForwardAuth#address
        '''
        result = self._values.get("address")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def auth_request_headers(self) -> typing.Optional[typing.List[builtins.str]]:
        '''AuthRequestHeaders defines the list of the headers to copy from the request to the authentication server.

        If not set or empty then all request headers are passed.

        :schema: MiddlewareSpecForwardAuth#authRequestHeaders
        '''
        result = self._values.get("auth_request_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def auth_response_headers(self) -> typing.Optional[typing.List[builtins.str]]:
        '''AuthResponseHeaders defines the list of headers to copy from the authentication server response and set on forwarded request, replacing any existing conflicting headers.

        :schema: MiddlewareSpecForwardAuth#authResponseHeaders
        '''
        result = self._values.get("auth_response_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def auth_response_headers_regex(self) -> typing.Optional[builtins.str]:
        '''AuthResponseHeadersRegex defines the regex to match headers to copy from the authentication server response and set on forwarded request, after stripping all headers that match the regex.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/#authresponseheadersregex

        :schema: MiddlewareSpecForwardAuth#authResponseHeadersRegex
        '''
        result = self._values.get("auth_response_headers_regex")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def auth_signin_url(self) -> typing.Optional[builtins.str]:
        '''AuthSigninURL specifies the URL to redirect to when the authentication server returns 401 Unauthorized.

        :schema: MiddlewareSpecForwardAuth#authSigninURL
        '''
        result = self._values.get("auth_signin_url")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def forward_body(self) -> typing.Optional[builtins.bool]:
        '''ForwardBody defines whether to send the request body to the authentication server.

        :schema: MiddlewareSpecForwardAuth#forwardBody
        '''
        result = self._values.get("forward_body")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def header_field(self) -> typing.Optional[builtins.str]:
        '''HeaderField defines a header field to store the authenticated user.

        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/forwardauth/#headerfield

        :schema: MiddlewareSpecForwardAuth#headerField
        '''
        result = self._values.get("header_field")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def max_body_size(self) -> typing.Optional[jsii.Number]:
        '''MaxBodySize defines the maximum body size in bytes allowed to be forwarded to the authentication server.

        :schema: MiddlewareSpecForwardAuth#maxBodySize
        '''
        result = self._values.get("max_body_size")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def max_response_body_size(self) -> typing.Optional[jsii.Number]:
        '''MaxResponseBodySize defines the maximum body size in bytes allowed in the response from the authentication server.

        :schema: MiddlewareSpecForwardAuth#maxResponseBodySize
        '''
        result = self._values.get("max_response_body_size")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def preserve_location_header(self) -> typing.Optional[builtins.bool]:
        '''PreserveLocationHeader defines whether to forward the Location header to the client as is or prefix it with the domain name of the authentication server.

        :schema: MiddlewareSpecForwardAuth#preserveLocationHeader
        '''
        result = self._values.get("preserve_location_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def preserve_request_method(self) -> typing.Optional[builtins.bool]:
        '''PreserveRequestMethod defines whether to preserve the original request method while forwarding the request to the authentication server.

        :schema: MiddlewareSpecForwardAuth#preserveRequestMethod
        '''
        result = self._values.get("preserve_request_method")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def tls(self) -> typing.Optional["MiddlewareSpecForwardAuthTls"]:
        '''TLS defines the configuration used to secure the connection to the authentication server.

        :schema: MiddlewareSpecForwardAuth#tls
        '''
        result = self._values.get("tls")
        return typing.cast(typing.Optional["MiddlewareSpecForwardAuthTls"], result)

    @builtins.property
    def trust_forward_header(self) -> typing.Optional[builtins.bool]:
        '''TrustForwardHeader defines whether to trust (ie: forward) all X-Forwarded-* headers.

        Deprecated: Use forwardedHeaders.trustedIPs at the EntryPoint level instead, and set trustForwardHeader to true on this middleware.

        :schema: MiddlewareSpecForwardAuth#trustForwardHeader
        '''
        result = self._values.get("trust_forward_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecForwardAuth(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecForwardAuthTls",
    jsii_struct_bases=[],
    name_mapping={
        "ca_optional": "caOptional",
        "ca_secret": "caSecret",
        "cert_secret": "certSecret",
        "insecure_skip_verify": "insecureSkipVerify",
    },
)
class MiddlewareSpecForwardAuthTls:
    def __init__(
        self,
        *,
        ca_optional: typing.Optional[builtins.bool] = None,
        ca_secret: typing.Optional[builtins.str] = None,
        cert_secret: typing.Optional[builtins.str] = None,
        insecure_skip_verify: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''TLS defines the configuration used to secure the connection to the authentication server.

        :param ca_optional: Deprecated: TLS client authentication is a server side option (see https://github.com/golang/go/blob/740a490f71d026bb7d2d13cb8fa2d6d6e0572b70/src/crypto/tls/common.go#L634).
        :param ca_secret: CASecret is the name of the referenced Kubernetes Secret containing the CA to validate the server certificate. The CA certificate is extracted from key ``tls.ca`` or ``ca.crt``.
        :param cert_secret: CertSecret is the name of the referenced Kubernetes Secret containing the client certificate. The client certificate is extracted from the keys ``tls.crt`` and ``tls.key``.
        :param insecure_skip_verify: InsecureSkipVerify defines whether the server certificates should be validated.

        :schema: MiddlewareSpecForwardAuthTls
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__942f174f4e9d10b6d19c3b8b754dfac4b07b1beba91334a4765a76b537999277)
            check_type(argname="argument ca_optional", value=ca_optional, expected_type=type_hints["ca_optional"])
            check_type(argname="argument ca_secret", value=ca_secret, expected_type=type_hints["ca_secret"])
            check_type(argname="argument cert_secret", value=cert_secret, expected_type=type_hints["cert_secret"])
            check_type(argname="argument insecure_skip_verify", value=insecure_skip_verify, expected_type=type_hints["insecure_skip_verify"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ca_optional is not None:
            self._values["ca_optional"] = ca_optional
        if ca_secret is not None:
            self._values["ca_secret"] = ca_secret
        if cert_secret is not None:
            self._values["cert_secret"] = cert_secret
        if insecure_skip_verify is not None:
            self._values["insecure_skip_verify"] = insecure_skip_verify

    @builtins.property
    def ca_optional(self) -> typing.Optional[builtins.bool]:
        '''Deprecated: TLS client authentication is a server side option (see https://github.com/golang/go/blob/740a490f71d026bb7d2d13cb8fa2d6d6e0572b70/src/crypto/tls/common.go#L634).

        :schema: MiddlewareSpecForwardAuthTls#caOptional
        '''
        result = self._values.get("ca_optional")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def ca_secret(self) -> typing.Optional[builtins.str]:
        '''CASecret is the name of the referenced Kubernetes Secret containing the CA to validate the server certificate.

        The CA certificate is extracted from key ``tls.ca`` or ``ca.crt``.

        :schema: MiddlewareSpecForwardAuthTls#caSecret
        '''
        result = self._values.get("ca_secret")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def cert_secret(self) -> typing.Optional[builtins.str]:
        '''CertSecret is the name of the referenced Kubernetes Secret containing the client certificate.

        The client certificate is extracted from the keys ``tls.crt`` and ``tls.key``.

        :schema: MiddlewareSpecForwardAuthTls#certSecret
        '''
        result = self._values.get("cert_secret")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def insecure_skip_verify(self) -> typing.Optional[builtins.bool]:
        '''InsecureSkipVerify defines whether the server certificates should be validated.

        :schema: MiddlewareSpecForwardAuthTls#insecureSkipVerify
        '''
        result = self._values.get("insecure_skip_verify")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecForwardAuthTls(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecGrpcWeb",
    jsii_struct_bases=[],
    name_mapping={"allow_origins": "allowOrigins"},
)
class MiddlewareSpecGrpcWeb:
    def __init__(
        self,
        *,
        allow_origins: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''GrpcWeb holds the gRPC web middleware configuration.

        This middleware converts a gRPC web request to an HTTP/2 gRPC request.

        :param allow_origins: AllowOrigins is a list of allowable origins. Can also be a wildcard origin "*".

        :schema: MiddlewareSpecGrpcWeb
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8c0f9f2667037b71c6a16a58195aea49b0d3e7d0280e39328901436982854f01)
            check_type(argname="argument allow_origins", value=allow_origins, expected_type=type_hints["allow_origins"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if allow_origins is not None:
            self._values["allow_origins"] = allow_origins

    @builtins.property
    def allow_origins(self) -> typing.Optional[typing.List[builtins.str]]:
        '''AllowOrigins is a list of allowable origins.

        Can also be a wildcard origin "*".

        :schema: MiddlewareSpecGrpcWeb#allowOrigins
        '''
        result = self._values.get("allow_origins")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecGrpcWeb(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecHeaders",
    jsii_struct_bases=[],
    name_mapping={
        "access_control_allow_credentials": "accessControlAllowCredentials",
        "access_control_allow_headers": "accessControlAllowHeaders",
        "access_control_allow_methods": "accessControlAllowMethods",
        "access_control_allow_origin_list": "accessControlAllowOriginList",
        "access_control_allow_origin_list_regex": "accessControlAllowOriginListRegex",
        "access_control_expose_headers": "accessControlExposeHeaders",
        "access_control_max_age": "accessControlMaxAge",
        "add_vary_header": "addVaryHeader",
        "allowed_hosts": "allowedHosts",
        "browser_xss_filter": "browserXssFilter",
        "content_security_policy": "contentSecurityPolicy",
        "content_security_policy_report_only": "contentSecurityPolicyReportOnly",
        "content_type_nosniff": "contentTypeNosniff",
        "custom_browser_xss_value": "customBrowserXssValue",
        "custom_frame_options_value": "customFrameOptionsValue",
        "custom_request_headers": "customRequestHeaders",
        "custom_response_headers": "customResponseHeaders",
        "feature_policy": "featurePolicy",
        "force_sts_header": "forceStsHeader",
        "frame_deny": "frameDeny",
        "hosts_proxy_headers": "hostsProxyHeaders",
        "is_development": "isDevelopment",
        "permissions_policy": "permissionsPolicy",
        "public_key": "publicKey",
        "referrer_policy": "referrerPolicy",
        "ssl_force_host": "sslForceHost",
        "ssl_host": "sslHost",
        "ssl_proxy_headers": "sslProxyHeaders",
        "ssl_redirect": "sslRedirect",
        "ssl_temporary_redirect": "sslTemporaryRedirect",
        "sts_include_subdomains": "stsIncludeSubdomains",
        "sts_preload": "stsPreload",
        "sts_seconds": "stsSeconds",
    },
)
class MiddlewareSpecHeaders:
    def __init__(
        self,
        *,
        access_control_allow_credentials: typing.Optional[builtins.bool] = None,
        access_control_allow_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        access_control_allow_methods: typing.Optional[typing.Sequence[builtins.str]] = None,
        access_control_allow_origin_list: typing.Optional[typing.Sequence[builtins.str]] = None,
        access_control_allow_origin_list_regex: typing.Optional[typing.Sequence[builtins.str]] = None,
        access_control_expose_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        access_control_max_age: typing.Optional[jsii.Number] = None,
        add_vary_header: typing.Optional[builtins.bool] = None,
        allowed_hosts: typing.Optional[typing.Sequence[builtins.str]] = None,
        browser_xss_filter: typing.Optional[builtins.bool] = None,
        content_security_policy: typing.Optional[builtins.str] = None,
        content_security_policy_report_only: typing.Optional[builtins.str] = None,
        content_type_nosniff: typing.Optional[builtins.bool] = None,
        custom_browser_xss_value: typing.Optional[builtins.str] = None,
        custom_frame_options_value: typing.Optional[builtins.str] = None,
        custom_request_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
        custom_response_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
        feature_policy: typing.Optional[builtins.str] = None,
        force_sts_header: typing.Optional[builtins.bool] = None,
        frame_deny: typing.Optional[builtins.bool] = None,
        hosts_proxy_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
        is_development: typing.Optional[builtins.bool] = None,
        permissions_policy: typing.Optional[builtins.str] = None,
        public_key: typing.Optional[builtins.str] = None,
        referrer_policy: typing.Optional[builtins.str] = None,
        ssl_force_host: typing.Optional[builtins.bool] = None,
        ssl_host: typing.Optional[builtins.str] = None,
        ssl_proxy_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
        ssl_redirect: typing.Optional[builtins.bool] = None,
        ssl_temporary_redirect: typing.Optional[builtins.bool] = None,
        sts_include_subdomains: typing.Optional[builtins.bool] = None,
        sts_preload: typing.Optional[builtins.bool] = None,
        sts_seconds: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''Headers holds the headers middleware configuration.

        This middleware manages the requests and responses headers.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/headers/#customrequestheaders

        :param access_control_allow_credentials: AccessControlAllowCredentials defines whether the request can include user credentials.
        :param access_control_allow_headers: AccessControlAllowHeaders defines the Access-Control-Request-Headers values sent in preflight response.
        :param access_control_allow_methods: AccessControlAllowMethods defines the Access-Control-Request-Method values sent in preflight response.
        :param access_control_allow_origin_list: AccessControlAllowOriginList is a list of allowable origins. Can also be a wildcard origin "*".
        :param access_control_allow_origin_list_regex: AccessControlAllowOriginListRegex is a list of allowable origins written following the Regular Expression syntax (https://golang.org/pkg/regexp/).
        :param access_control_expose_headers: AccessControlExposeHeaders defines the Access-Control-Expose-Headers values sent in preflight response.
        :param access_control_max_age: AccessControlMaxAge defines the time that a preflight request may be cached.
        :param add_vary_header: AddVaryHeader defines whether the Vary header is automatically added/updated when the AccessControlAllowOriginList is set.
        :param allowed_hosts: AllowedHosts defines the fully qualified list of allowed domain names.
        :param browser_xss_filter: BrowserXSSFilter defines whether to add the X-XSS-Protection header with the value 1; mode=block.
        :param content_security_policy: ContentSecurityPolicy defines the Content-Security-Policy header value.
        :param content_security_policy_report_only: ContentSecurityPolicyReportOnly defines the Content-Security-Policy-Report-Only header value.
        :param content_type_nosniff: ContentTypeNosniff defines whether to add the X-Content-Type-Options header with the nosniff value.
        :param custom_browser_xss_value: CustomBrowserXSSValue defines the X-XSS-Protection header value. This overrides the BrowserXssFilter option.
        :param custom_frame_options_value: CustomFrameOptionsValue defines the X-Frame-Options header value. This overrides the FrameDeny option.
        :param custom_request_headers: CustomRequestHeaders defines the header names and values to apply to the request.
        :param custom_response_headers: CustomResponseHeaders defines the header names and values to apply to the response.
        :param feature_policy: Deprecated: FeaturePolicy option is deprecated, please use PermissionsPolicy instead.
        :param force_sts_header: ForceSTSHeader defines whether to add the STS header even when the connection is HTTP.
        :param frame_deny: FrameDeny defines whether to add the X-Frame-Options header with the DENY value.
        :param hosts_proxy_headers: HostsProxyHeaders defines the header keys that may hold a proxied hostname value for the request.
        :param is_development: IsDevelopment defines whether to mitigate the unwanted effects of the AllowedHosts, SSL, and STS options when developing. Usually testing takes place using HTTP, not HTTPS, and on localhost, not your production domain. If you would like your development environment to mimic production with complete Host blocking, SSL redirects, and STS headers, leave this as false.
        :param permissions_policy: PermissionsPolicy defines the Permissions-Policy header value. This allows sites to control browser features.
        :param public_key: PublicKey is the public key that implements HPKP to prevent MITM attacks with forged certificates.
        :param referrer_policy: ReferrerPolicy defines the Referrer-Policy header value. This allows sites to control whether browsers forward the Referer header to other sites.
        :param ssl_force_host: Deprecated: SSLForceHost option is deprecated, please use RedirectRegex instead.
        :param ssl_host: Deprecated: SSLHost option is deprecated, please use RedirectRegex instead.
        :param ssl_proxy_headers: SSLProxyHeaders defines the header keys with associated values that would indicate a valid HTTPS request. It can be useful when using other proxies (example: "X-Forwarded-Proto": "https").
        :param ssl_redirect: Deprecated: SSLRedirect option is deprecated, please use EntryPoint redirection or RedirectScheme instead.
        :param ssl_temporary_redirect: Deprecated: SSLTemporaryRedirect option is deprecated, please use EntryPoint redirection or RedirectScheme instead.
        :param sts_include_subdomains: STSIncludeSubdomains defines whether the includeSubDomains directive is appended to the Strict-Transport-Security header.
        :param sts_preload: STSPreload defines whether the preload flag is appended to the Strict-Transport-Security header.
        :param sts_seconds: STSSeconds defines the max-age of the Strict-Transport-Security header. If set to 0, the header is not set.

        :schema: MiddlewareSpecHeaders
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__9ef1d5780986fdbb8aac3038564962f4cd2d705e97904e0c91be18d6d3538342)
            check_type(argname="argument access_control_allow_credentials", value=access_control_allow_credentials, expected_type=type_hints["access_control_allow_credentials"])
            check_type(argname="argument access_control_allow_headers", value=access_control_allow_headers, expected_type=type_hints["access_control_allow_headers"])
            check_type(argname="argument access_control_allow_methods", value=access_control_allow_methods, expected_type=type_hints["access_control_allow_methods"])
            check_type(argname="argument access_control_allow_origin_list", value=access_control_allow_origin_list, expected_type=type_hints["access_control_allow_origin_list"])
            check_type(argname="argument access_control_allow_origin_list_regex", value=access_control_allow_origin_list_regex, expected_type=type_hints["access_control_allow_origin_list_regex"])
            check_type(argname="argument access_control_expose_headers", value=access_control_expose_headers, expected_type=type_hints["access_control_expose_headers"])
            check_type(argname="argument access_control_max_age", value=access_control_max_age, expected_type=type_hints["access_control_max_age"])
            check_type(argname="argument add_vary_header", value=add_vary_header, expected_type=type_hints["add_vary_header"])
            check_type(argname="argument allowed_hosts", value=allowed_hosts, expected_type=type_hints["allowed_hosts"])
            check_type(argname="argument browser_xss_filter", value=browser_xss_filter, expected_type=type_hints["browser_xss_filter"])
            check_type(argname="argument content_security_policy", value=content_security_policy, expected_type=type_hints["content_security_policy"])
            check_type(argname="argument content_security_policy_report_only", value=content_security_policy_report_only, expected_type=type_hints["content_security_policy_report_only"])
            check_type(argname="argument content_type_nosniff", value=content_type_nosniff, expected_type=type_hints["content_type_nosniff"])
            check_type(argname="argument custom_browser_xss_value", value=custom_browser_xss_value, expected_type=type_hints["custom_browser_xss_value"])
            check_type(argname="argument custom_frame_options_value", value=custom_frame_options_value, expected_type=type_hints["custom_frame_options_value"])
            check_type(argname="argument custom_request_headers", value=custom_request_headers, expected_type=type_hints["custom_request_headers"])
            check_type(argname="argument custom_response_headers", value=custom_response_headers, expected_type=type_hints["custom_response_headers"])
            check_type(argname="argument feature_policy", value=feature_policy, expected_type=type_hints["feature_policy"])
            check_type(argname="argument force_sts_header", value=force_sts_header, expected_type=type_hints["force_sts_header"])
            check_type(argname="argument frame_deny", value=frame_deny, expected_type=type_hints["frame_deny"])
            check_type(argname="argument hosts_proxy_headers", value=hosts_proxy_headers, expected_type=type_hints["hosts_proxy_headers"])
            check_type(argname="argument is_development", value=is_development, expected_type=type_hints["is_development"])
            check_type(argname="argument permissions_policy", value=permissions_policy, expected_type=type_hints["permissions_policy"])
            check_type(argname="argument public_key", value=public_key, expected_type=type_hints["public_key"])
            check_type(argname="argument referrer_policy", value=referrer_policy, expected_type=type_hints["referrer_policy"])
            check_type(argname="argument ssl_force_host", value=ssl_force_host, expected_type=type_hints["ssl_force_host"])
            check_type(argname="argument ssl_host", value=ssl_host, expected_type=type_hints["ssl_host"])
            check_type(argname="argument ssl_proxy_headers", value=ssl_proxy_headers, expected_type=type_hints["ssl_proxy_headers"])
            check_type(argname="argument ssl_redirect", value=ssl_redirect, expected_type=type_hints["ssl_redirect"])
            check_type(argname="argument ssl_temporary_redirect", value=ssl_temporary_redirect, expected_type=type_hints["ssl_temporary_redirect"])
            check_type(argname="argument sts_include_subdomains", value=sts_include_subdomains, expected_type=type_hints["sts_include_subdomains"])
            check_type(argname="argument sts_preload", value=sts_preload, expected_type=type_hints["sts_preload"])
            check_type(argname="argument sts_seconds", value=sts_seconds, expected_type=type_hints["sts_seconds"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if access_control_allow_credentials is not None:
            self._values["access_control_allow_credentials"] = access_control_allow_credentials
        if access_control_allow_headers is not None:
            self._values["access_control_allow_headers"] = access_control_allow_headers
        if access_control_allow_methods is not None:
            self._values["access_control_allow_methods"] = access_control_allow_methods
        if access_control_allow_origin_list is not None:
            self._values["access_control_allow_origin_list"] = access_control_allow_origin_list
        if access_control_allow_origin_list_regex is not None:
            self._values["access_control_allow_origin_list_regex"] = access_control_allow_origin_list_regex
        if access_control_expose_headers is not None:
            self._values["access_control_expose_headers"] = access_control_expose_headers
        if access_control_max_age is not None:
            self._values["access_control_max_age"] = access_control_max_age
        if add_vary_header is not None:
            self._values["add_vary_header"] = add_vary_header
        if allowed_hosts is not None:
            self._values["allowed_hosts"] = allowed_hosts
        if browser_xss_filter is not None:
            self._values["browser_xss_filter"] = browser_xss_filter
        if content_security_policy is not None:
            self._values["content_security_policy"] = content_security_policy
        if content_security_policy_report_only is not None:
            self._values["content_security_policy_report_only"] = content_security_policy_report_only
        if content_type_nosniff is not None:
            self._values["content_type_nosniff"] = content_type_nosniff
        if custom_browser_xss_value is not None:
            self._values["custom_browser_xss_value"] = custom_browser_xss_value
        if custom_frame_options_value is not None:
            self._values["custom_frame_options_value"] = custom_frame_options_value
        if custom_request_headers is not None:
            self._values["custom_request_headers"] = custom_request_headers
        if custom_response_headers is not None:
            self._values["custom_response_headers"] = custom_response_headers
        if feature_policy is not None:
            self._values["feature_policy"] = feature_policy
        if force_sts_header is not None:
            self._values["force_sts_header"] = force_sts_header
        if frame_deny is not None:
            self._values["frame_deny"] = frame_deny
        if hosts_proxy_headers is not None:
            self._values["hosts_proxy_headers"] = hosts_proxy_headers
        if is_development is not None:
            self._values["is_development"] = is_development
        if permissions_policy is not None:
            self._values["permissions_policy"] = permissions_policy
        if public_key is not None:
            self._values["public_key"] = public_key
        if referrer_policy is not None:
            self._values["referrer_policy"] = referrer_policy
        if ssl_force_host is not None:
            self._values["ssl_force_host"] = ssl_force_host
        if ssl_host is not None:
            self._values["ssl_host"] = ssl_host
        if ssl_proxy_headers is not None:
            self._values["ssl_proxy_headers"] = ssl_proxy_headers
        if ssl_redirect is not None:
            self._values["ssl_redirect"] = ssl_redirect
        if ssl_temporary_redirect is not None:
            self._values["ssl_temporary_redirect"] = ssl_temporary_redirect
        if sts_include_subdomains is not None:
            self._values["sts_include_subdomains"] = sts_include_subdomains
        if sts_preload is not None:
            self._values["sts_preload"] = sts_preload
        if sts_seconds is not None:
            self._values["sts_seconds"] = sts_seconds

    @builtins.property
    def access_control_allow_credentials(self) -> typing.Optional[builtins.bool]:
        '''AccessControlAllowCredentials defines whether the request can include user credentials.

        :schema: MiddlewareSpecHeaders#accessControlAllowCredentials
        '''
        result = self._values.get("access_control_allow_credentials")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def access_control_allow_headers(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AccessControlAllowHeaders defines the Access-Control-Request-Headers values sent in preflight response.

        :schema: MiddlewareSpecHeaders#accessControlAllowHeaders
        '''
        result = self._values.get("access_control_allow_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def access_control_allow_methods(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AccessControlAllowMethods defines the Access-Control-Request-Method values sent in preflight response.

        :schema: MiddlewareSpecHeaders#accessControlAllowMethods
        '''
        result = self._values.get("access_control_allow_methods")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def access_control_allow_origin_list(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AccessControlAllowOriginList is a list of allowable origins.

        Can also be a wildcard origin "*".

        :schema: MiddlewareSpecHeaders#accessControlAllowOriginList
        '''
        result = self._values.get("access_control_allow_origin_list")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def access_control_allow_origin_list_regex(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AccessControlAllowOriginListRegex is a list of allowable origins written following the Regular Expression syntax (https://golang.org/pkg/regexp/).

        :schema: MiddlewareSpecHeaders#accessControlAllowOriginListRegex
        '''
        result = self._values.get("access_control_allow_origin_list_regex")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def access_control_expose_headers(
        self,
    ) -> typing.Optional[typing.List[builtins.str]]:
        '''AccessControlExposeHeaders defines the Access-Control-Expose-Headers values sent in preflight response.

        :schema: MiddlewareSpecHeaders#accessControlExposeHeaders
        '''
        result = self._values.get("access_control_expose_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def access_control_max_age(self) -> typing.Optional[jsii.Number]:
        '''AccessControlMaxAge defines the time that a preflight request may be cached.

        :schema: MiddlewareSpecHeaders#accessControlMaxAge
        '''
        result = self._values.get("access_control_max_age")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def add_vary_header(self) -> typing.Optional[builtins.bool]:
        '''AddVaryHeader defines whether the Vary header is automatically added/updated when the AccessControlAllowOriginList is set.

        :schema: MiddlewareSpecHeaders#addVaryHeader
        '''
        result = self._values.get("add_vary_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def allowed_hosts(self) -> typing.Optional[typing.List[builtins.str]]:
        '''AllowedHosts defines the fully qualified list of allowed domain names.

        :schema: MiddlewareSpecHeaders#allowedHosts
        '''
        result = self._values.get("allowed_hosts")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def browser_xss_filter(self) -> typing.Optional[builtins.bool]:
        '''BrowserXSSFilter defines whether to add the X-XSS-Protection header with the value 1;

        mode=block.

        :schema: MiddlewareSpecHeaders#browserXssFilter
        '''
        result = self._values.get("browser_xss_filter")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def content_security_policy(self) -> typing.Optional[builtins.str]:
        '''ContentSecurityPolicy defines the Content-Security-Policy header value.

        :schema: MiddlewareSpecHeaders#contentSecurityPolicy
        '''
        result = self._values.get("content_security_policy")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def content_security_policy_report_only(self) -> typing.Optional[builtins.str]:
        '''ContentSecurityPolicyReportOnly defines the Content-Security-Policy-Report-Only header value.

        :schema: MiddlewareSpecHeaders#contentSecurityPolicyReportOnly
        '''
        result = self._values.get("content_security_policy_report_only")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def content_type_nosniff(self) -> typing.Optional[builtins.bool]:
        '''ContentTypeNosniff defines whether to add the X-Content-Type-Options header with the nosniff value.

        :schema: MiddlewareSpecHeaders#contentTypeNosniff
        '''
        result = self._values.get("content_type_nosniff")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def custom_browser_xss_value(self) -> typing.Optional[builtins.str]:
        '''CustomBrowserXSSValue defines the X-XSS-Protection header value.

        This overrides the BrowserXssFilter option.

        :schema: MiddlewareSpecHeaders#customBrowserXSSValue
        '''
        result = self._values.get("custom_browser_xss_value")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def custom_frame_options_value(self) -> typing.Optional[builtins.str]:
        '''CustomFrameOptionsValue defines the X-Frame-Options header value.

        This overrides the FrameDeny option.

        :schema: MiddlewareSpecHeaders#customFrameOptionsValue
        '''
        result = self._values.get("custom_frame_options_value")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def custom_request_headers(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, builtins.str]]:
        '''CustomRequestHeaders defines the header names and values to apply to the request.

        :schema: MiddlewareSpecHeaders#customRequestHeaders
        '''
        result = self._values.get("custom_request_headers")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, builtins.str]], result)

    @builtins.property
    def custom_response_headers(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, builtins.str]]:
        '''CustomResponseHeaders defines the header names and values to apply to the response.

        :schema: MiddlewareSpecHeaders#customResponseHeaders
        '''
        result = self._values.get("custom_response_headers")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, builtins.str]], result)

    @builtins.property
    def feature_policy(self) -> typing.Optional[builtins.str]:
        '''Deprecated: FeaturePolicy option is deprecated, please use PermissionsPolicy instead.

        :schema: MiddlewareSpecHeaders#featurePolicy
        '''
        result = self._values.get("feature_policy")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def force_sts_header(self) -> typing.Optional[builtins.bool]:
        '''ForceSTSHeader defines whether to add the STS header even when the connection is HTTP.

        :schema: MiddlewareSpecHeaders#forceSTSHeader
        '''
        result = self._values.get("force_sts_header")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def frame_deny(self) -> typing.Optional[builtins.bool]:
        '''FrameDeny defines whether to add the X-Frame-Options header with the DENY value.

        :schema: MiddlewareSpecHeaders#frameDeny
        '''
        result = self._values.get("frame_deny")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def hosts_proxy_headers(self) -> typing.Optional[typing.List[builtins.str]]:
        '''HostsProxyHeaders defines the header keys that may hold a proxied hostname value for the request.

        :schema: MiddlewareSpecHeaders#hostsProxyHeaders
        '''
        result = self._values.get("hosts_proxy_headers")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def is_development(self) -> typing.Optional[builtins.bool]:
        '''IsDevelopment defines whether to mitigate the unwanted effects of the AllowedHosts, SSL, and STS options when developing.

        Usually testing takes place using HTTP, not HTTPS, and on localhost, not your production domain.
        If you would like your development environment to mimic production with complete Host blocking, SSL redirects,
        and STS headers, leave this as false.

        :schema: MiddlewareSpecHeaders#isDevelopment
        '''
        result = self._values.get("is_development")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def permissions_policy(self) -> typing.Optional[builtins.str]:
        '''PermissionsPolicy defines the Permissions-Policy header value.

        This allows sites to control browser features.

        :schema: MiddlewareSpecHeaders#permissionsPolicy
        '''
        result = self._values.get("permissions_policy")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def public_key(self) -> typing.Optional[builtins.str]:
        '''PublicKey is the public key that implements HPKP to prevent MITM attacks with forged certificates.

        :schema: MiddlewareSpecHeaders#publicKey
        '''
        result = self._values.get("public_key")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def referrer_policy(self) -> typing.Optional[builtins.str]:
        '''ReferrerPolicy defines the Referrer-Policy header value.

        This allows sites to control whether browsers forward the Referer header to other sites.

        :schema: MiddlewareSpecHeaders#referrerPolicy
        '''
        result = self._values.get("referrer_policy")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def ssl_force_host(self) -> typing.Optional[builtins.bool]:
        '''Deprecated: SSLForceHost option is deprecated, please use RedirectRegex instead.

        :schema: MiddlewareSpecHeaders#sslForceHost
        '''
        result = self._values.get("ssl_force_host")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def ssl_host(self) -> typing.Optional[builtins.str]:
        '''Deprecated: SSLHost option is deprecated, please use RedirectRegex instead.

        :schema: MiddlewareSpecHeaders#sslHost
        '''
        result = self._values.get("ssl_host")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def ssl_proxy_headers(
        self,
    ) -> typing.Optional[typing.Mapping[builtins.str, builtins.str]]:
        '''SSLProxyHeaders defines the header keys with associated values that would indicate a valid HTTPS request.

        It can be useful when using other proxies (example: "X-Forwarded-Proto": "https").

        :schema: MiddlewareSpecHeaders#sslProxyHeaders
        '''
        result = self._values.get("ssl_proxy_headers")
        return typing.cast(typing.Optional[typing.Mapping[builtins.str, builtins.str]], result)

    @builtins.property
    def ssl_redirect(self) -> typing.Optional[builtins.bool]:
        '''Deprecated: SSLRedirect option is deprecated, please use EntryPoint redirection or RedirectScheme instead.

        :schema: MiddlewareSpecHeaders#sslRedirect
        '''
        result = self._values.get("ssl_redirect")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def ssl_temporary_redirect(self) -> typing.Optional[builtins.bool]:
        '''Deprecated: SSLTemporaryRedirect option is deprecated, please use EntryPoint redirection or RedirectScheme instead.

        :schema: MiddlewareSpecHeaders#sslTemporaryRedirect
        '''
        result = self._values.get("ssl_temporary_redirect")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def sts_include_subdomains(self) -> typing.Optional[builtins.bool]:
        '''STSIncludeSubdomains defines whether the includeSubDomains directive is appended to the Strict-Transport-Security header.

        :schema: MiddlewareSpecHeaders#stsIncludeSubdomains
        '''
        result = self._values.get("sts_include_subdomains")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def sts_preload(self) -> typing.Optional[builtins.bool]:
        '''STSPreload defines whether the preload flag is appended to the Strict-Transport-Security header.

        :schema: MiddlewareSpecHeaders#stsPreload
        '''
        result = self._values.get("sts_preload")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def sts_seconds(self) -> typing.Optional[jsii.Number]:
        '''STSSeconds defines the max-age of the Strict-Transport-Security header.

        If set to 0, the header is not set.

        :schema: MiddlewareSpecHeaders#stsSeconds
        '''
        result = self._values.get("sts_seconds")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecHeaders(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecInFlightReq",
    jsii_struct_bases=[],
    name_mapping={"amount": "amount", "source_criterion": "sourceCriterion"},
)
class MiddlewareSpecInFlightReq:
    def __init__(
        self,
        *,
        amount: typing.Optional[jsii.Number] = None,
        source_criterion: typing.Optional[typing.Union["MiddlewareSpecInFlightReqSourceCriterion", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''InFlightReq holds the in-flight request middleware configuration.

        This middleware limits the number of requests being processed and served concurrently.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/

        :param amount: Amount defines the maximum amount of allowed simultaneous in-flight request. The middleware responds with HTTP 429 Too Many Requests if there are already amount requests in progress (based on the same sourceCriterion strategy).
        :param source_criterion: SourceCriterion defines what criterion is used to group requests as originating from a common source. If several strategies are defined at the same time, an error will be raised. If none are set, the default is to use the requestHost. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/#sourcecriterion

        :schema: MiddlewareSpecInFlightReq
        '''
        if isinstance(source_criterion, dict):
            source_criterion = MiddlewareSpecInFlightReqSourceCriterion(**source_criterion)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__2f1a4559177890cc606211594df71a5ac7b07a031fac65564e91a8d613762ebd)
            check_type(argname="argument amount", value=amount, expected_type=type_hints["amount"])
            check_type(argname="argument source_criterion", value=source_criterion, expected_type=type_hints["source_criterion"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if amount is not None:
            self._values["amount"] = amount
        if source_criterion is not None:
            self._values["source_criterion"] = source_criterion

    @builtins.property
    def amount(self) -> typing.Optional[jsii.Number]:
        '''Amount defines the maximum amount of allowed simultaneous in-flight request.

        The middleware responds with HTTP 429 Too Many Requests if there are already amount requests in progress (based on the same sourceCriterion strategy).

        :schema: MiddlewareSpecInFlightReq#amount
        '''
        result = self._values.get("amount")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def source_criterion(
        self,
    ) -> typing.Optional["MiddlewareSpecInFlightReqSourceCriterion"]:
        '''SourceCriterion defines what criterion is used to group requests as originating from a common source.

        If several strategies are defined at the same time, an error will be raised.
        If none are set, the default is to use the requestHost.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/#sourcecriterion

        :schema: MiddlewareSpecInFlightReq#sourceCriterion
        '''
        result = self._values.get("source_criterion")
        return typing.cast(typing.Optional["MiddlewareSpecInFlightReqSourceCriterion"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecInFlightReq(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecInFlightReqSourceCriterion",
    jsii_struct_bases=[],
    name_mapping={
        "ip_strategy": "ipStrategy",
        "request_header_name": "requestHeaderName",
        "request_host": "requestHost",
    },
)
class MiddlewareSpecInFlightReqSourceCriterion:
    def __init__(
        self,
        *,
        ip_strategy: typing.Optional[typing.Union["MiddlewareSpecInFlightReqSourceCriterionIpStrategy", typing.Dict[builtins.str, typing.Any]]] = None,
        request_header_name: typing.Optional[builtins.str] = None,
        request_host: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''SourceCriterion defines what criterion is used to group requests as originating from a common source.

        If several strategies are defined at the same time, an error will be raised.
        If none are set, the default is to use the requestHost.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/inflightreq/#sourcecriterion

        :param ip_strategy: IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy
        :param request_header_name: RequestHeaderName defines the name of the header used to group incoming requests.
        :param request_host: RequestHost defines whether to consider the request Host as the source.

        :schema: MiddlewareSpecInFlightReqSourceCriterion
        '''
        if isinstance(ip_strategy, dict):
            ip_strategy = MiddlewareSpecInFlightReqSourceCriterionIpStrategy(**ip_strategy)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8c382c17f0718e21ed2d993ecdb8727a18a361781b1956e1293e77f7310bc7b9)
            check_type(argname="argument ip_strategy", value=ip_strategy, expected_type=type_hints["ip_strategy"])
            check_type(argname="argument request_header_name", value=request_header_name, expected_type=type_hints["request_header_name"])
            check_type(argname="argument request_host", value=request_host, expected_type=type_hints["request_host"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ip_strategy is not None:
            self._values["ip_strategy"] = ip_strategy
        if request_header_name is not None:
            self._values["request_header_name"] = request_header_name
        if request_host is not None:
            self._values["request_host"] = request_host

    @builtins.property
    def ip_strategy(
        self,
    ) -> typing.Optional["MiddlewareSpecInFlightReqSourceCriterionIpStrategy"]:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :schema: MiddlewareSpecInFlightReqSourceCriterion#ipStrategy
        '''
        result = self._values.get("ip_strategy")
        return typing.cast(typing.Optional["MiddlewareSpecInFlightReqSourceCriterionIpStrategy"], result)

    @builtins.property
    def request_header_name(self) -> typing.Optional[builtins.str]:
        '''RequestHeaderName defines the name of the header used to group incoming requests.

        :schema: MiddlewareSpecInFlightReqSourceCriterion#requestHeaderName
        '''
        result = self._values.get("request_header_name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def request_host(self) -> typing.Optional[builtins.bool]:
        '''RequestHost defines whether to consider the request Host as the source.

        :schema: MiddlewareSpecInFlightReqSourceCriterion#requestHost
        '''
        result = self._values.get("request_host")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecInFlightReqSourceCriterion(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecInFlightReqSourceCriterionIpStrategy",
    jsii_struct_bases=[],
    name_mapping={
        "depth": "depth",
        "excluded_i_ps": "excludedIPs",
        "ipv6_subnet": "ipv6Subnet",
    },
)
class MiddlewareSpecInFlightReqSourceCriterionIpStrategy:
    def __init__(
        self,
        *,
        depth: typing.Optional[jsii.Number] = None,
        excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
        ipv6_subnet: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :param depth: Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).
        :param excluded_i_ps: ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.
        :param ipv6_subnet: IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP. Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecInFlightReqSourceCriterionIpStrategy
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__455d955d3f01b2f541018fe6da3569ce7d58563076992a03b2b9f21ceb9551b3)
            check_type(argname="argument depth", value=depth, expected_type=type_hints["depth"])
            check_type(argname="argument excluded_i_ps", value=excluded_i_ps, expected_type=type_hints["excluded_i_ps"])
            check_type(argname="argument ipv6_subnet", value=ipv6_subnet, expected_type=type_hints["ipv6_subnet"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if depth is not None:
            self._values["depth"] = depth
        if excluded_i_ps is not None:
            self._values["excluded_i_ps"] = excluded_i_ps
        if ipv6_subnet is not None:
            self._values["ipv6_subnet"] = ipv6_subnet

    @builtins.property
    def depth(self) -> typing.Optional[jsii.Number]:
        '''Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).

        :schema: MiddlewareSpecInFlightReqSourceCriterionIpStrategy#depth
        '''
        result = self._values.get("depth")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def excluded_i_ps(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.

        :schema: MiddlewareSpecInFlightReqSourceCriterionIpStrategy#excludedIPs
        '''
        result = self._values.get("excluded_i_ps")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def ipv6_subnet(self) -> typing.Optional[jsii.Number]:
        '''IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP.

        Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecInFlightReqSourceCriterionIpStrategy#ipv6Subnet
        '''
        result = self._values.get("ipv6_subnet")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecInFlightReqSourceCriterionIpStrategy(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecIpAllowList",
    jsii_struct_bases=[],
    name_mapping={
        "ip_strategy": "ipStrategy",
        "reject_status_code": "rejectStatusCode",
        "source_range": "sourceRange",
    },
)
class MiddlewareSpecIpAllowList:
    def __init__(
        self,
        *,
        ip_strategy: typing.Optional[typing.Union["MiddlewareSpecIpAllowListIpStrategy", typing.Dict[builtins.str, typing.Any]]] = None,
        reject_status_code: typing.Optional[jsii.Number] = None,
        source_range: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''IPAllowList holds the IP allowlist middleware configuration.

        This middleware limits allowed requests based on the client IP.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/

        :param ip_strategy: IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy
        :param reject_status_code: RejectStatusCode defines the HTTP status code used for refused requests. If not set, the default is 403 (Forbidden).
        :param source_range: SourceRange defines the set of allowed IPs (or ranges of allowed IPs by using CIDR notation).

        :schema: MiddlewareSpecIpAllowList
        '''
        if isinstance(ip_strategy, dict):
            ip_strategy = MiddlewareSpecIpAllowListIpStrategy(**ip_strategy)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b2382a4e5b40700cf786f3e72440590e2dfd8a0e0643e3a93e06144df11a39c9)
            check_type(argname="argument ip_strategy", value=ip_strategy, expected_type=type_hints["ip_strategy"])
            check_type(argname="argument reject_status_code", value=reject_status_code, expected_type=type_hints["reject_status_code"])
            check_type(argname="argument source_range", value=source_range, expected_type=type_hints["source_range"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ip_strategy is not None:
            self._values["ip_strategy"] = ip_strategy
        if reject_status_code is not None:
            self._values["reject_status_code"] = reject_status_code
        if source_range is not None:
            self._values["source_range"] = source_range

    @builtins.property
    def ip_strategy(self) -> typing.Optional["MiddlewareSpecIpAllowListIpStrategy"]:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :schema: MiddlewareSpecIpAllowList#ipStrategy
        '''
        result = self._values.get("ip_strategy")
        return typing.cast(typing.Optional["MiddlewareSpecIpAllowListIpStrategy"], result)

    @builtins.property
    def reject_status_code(self) -> typing.Optional[jsii.Number]:
        '''RejectStatusCode defines the HTTP status code used for refused requests.

        If not set, the default is 403 (Forbidden).

        :schema: MiddlewareSpecIpAllowList#rejectStatusCode
        '''
        result = self._values.get("reject_status_code")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def source_range(self) -> typing.Optional[typing.List[builtins.str]]:
        '''SourceRange defines the set of allowed IPs (or ranges of allowed IPs by using CIDR notation).

        :schema: MiddlewareSpecIpAllowList#sourceRange
        '''
        result = self._values.get("source_range")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecIpAllowList(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecIpAllowListIpStrategy",
    jsii_struct_bases=[],
    name_mapping={
        "depth": "depth",
        "excluded_i_ps": "excludedIPs",
        "ipv6_subnet": "ipv6Subnet",
    },
)
class MiddlewareSpecIpAllowListIpStrategy:
    def __init__(
        self,
        *,
        depth: typing.Optional[jsii.Number] = None,
        excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
        ipv6_subnet: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :param depth: Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).
        :param excluded_i_ps: ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.
        :param ipv6_subnet: IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP. Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecIpAllowListIpStrategy
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__c9856a2f7bd030acbe2c762d2b03fe487060d21c88d8072d023fbdb04564937e)
            check_type(argname="argument depth", value=depth, expected_type=type_hints["depth"])
            check_type(argname="argument excluded_i_ps", value=excluded_i_ps, expected_type=type_hints["excluded_i_ps"])
            check_type(argname="argument ipv6_subnet", value=ipv6_subnet, expected_type=type_hints["ipv6_subnet"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if depth is not None:
            self._values["depth"] = depth
        if excluded_i_ps is not None:
            self._values["excluded_i_ps"] = excluded_i_ps
        if ipv6_subnet is not None:
            self._values["ipv6_subnet"] = ipv6_subnet

    @builtins.property
    def depth(self) -> typing.Optional[jsii.Number]:
        '''Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).

        :schema: MiddlewareSpecIpAllowListIpStrategy#depth
        '''
        result = self._values.get("depth")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def excluded_i_ps(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.

        :schema: MiddlewareSpecIpAllowListIpStrategy#excludedIPs
        '''
        result = self._values.get("excluded_i_ps")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def ipv6_subnet(self) -> typing.Optional[jsii.Number]:
        '''IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP.

        Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecIpAllowListIpStrategy#ipv6Subnet
        '''
        result = self._values.get("ipv6_subnet")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecIpAllowListIpStrategy(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecIpWhiteList",
    jsii_struct_bases=[],
    name_mapping={"ip_strategy": "ipStrategy", "source_range": "sourceRange"},
)
class MiddlewareSpecIpWhiteList:
    def __init__(
        self,
        *,
        ip_strategy: typing.Optional[typing.Union["MiddlewareSpecIpWhiteListIpStrategy", typing.Dict[builtins.str, typing.Any]]] = None,
        source_range: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''Deprecated: please use IPAllowList instead.

        :param ip_strategy: IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy
        :param source_range: SourceRange defines the set of allowed IPs (or ranges of allowed IPs by using CIDR notation). Required.

        :schema: MiddlewareSpecIpWhiteList
        '''
        if isinstance(ip_strategy, dict):
            ip_strategy = MiddlewareSpecIpWhiteListIpStrategy(**ip_strategy)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__08120b59d317ad92e738083d09a9cc9a6327c4224f599ba6e24993e7864a1f8a)
            check_type(argname="argument ip_strategy", value=ip_strategy, expected_type=type_hints["ip_strategy"])
            check_type(argname="argument source_range", value=source_range, expected_type=type_hints["source_range"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ip_strategy is not None:
            self._values["ip_strategy"] = ip_strategy
        if source_range is not None:
            self._values["source_range"] = source_range

    @builtins.property
    def ip_strategy(self) -> typing.Optional["MiddlewareSpecIpWhiteListIpStrategy"]:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :schema: MiddlewareSpecIpWhiteList#ipStrategy
        '''
        result = self._values.get("ip_strategy")
        return typing.cast(typing.Optional["MiddlewareSpecIpWhiteListIpStrategy"], result)

    @builtins.property
    def source_range(self) -> typing.Optional[typing.List[builtins.str]]:
        '''SourceRange defines the set of allowed IPs (or ranges of allowed IPs by using CIDR notation).

        Required.

        :schema: MiddlewareSpecIpWhiteList#sourceRange
        '''
        result = self._values.get("source_range")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecIpWhiteList(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecIpWhiteListIpStrategy",
    jsii_struct_bases=[],
    name_mapping={
        "depth": "depth",
        "excluded_i_ps": "excludedIPs",
        "ipv6_subnet": "ipv6Subnet",
    },
)
class MiddlewareSpecIpWhiteListIpStrategy:
    def __init__(
        self,
        *,
        depth: typing.Optional[jsii.Number] = None,
        excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
        ipv6_subnet: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :param depth: Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).
        :param excluded_i_ps: ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.
        :param ipv6_subnet: IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP. Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecIpWhiteListIpStrategy
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__56605baed59f48b29fa06fa3b24900b98adccd9a14adf8ec25ab966797cb5c50)
            check_type(argname="argument depth", value=depth, expected_type=type_hints["depth"])
            check_type(argname="argument excluded_i_ps", value=excluded_i_ps, expected_type=type_hints["excluded_i_ps"])
            check_type(argname="argument ipv6_subnet", value=ipv6_subnet, expected_type=type_hints["ipv6_subnet"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if depth is not None:
            self._values["depth"] = depth
        if excluded_i_ps is not None:
            self._values["excluded_i_ps"] = excluded_i_ps
        if ipv6_subnet is not None:
            self._values["ipv6_subnet"] = ipv6_subnet

    @builtins.property
    def depth(self) -> typing.Optional[jsii.Number]:
        '''Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).

        :schema: MiddlewareSpecIpWhiteListIpStrategy#depth
        '''
        result = self._values.get("depth")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def excluded_i_ps(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.

        :schema: MiddlewareSpecIpWhiteListIpStrategy#excludedIPs
        '''
        result = self._values.get("excluded_i_ps")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def ipv6_subnet(self) -> typing.Optional[jsii.Number]:
        '''IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP.

        Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecIpWhiteListIpStrategy#ipv6Subnet
        '''
        result = self._values.get("ipv6_subnet")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecIpWhiteListIpStrategy(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecPassTlsClientCert",
    jsii_struct_bases=[],
    name_mapping={"info": "info", "pem": "pem"},
)
class MiddlewareSpecPassTlsClientCert:
    def __init__(
        self,
        *,
        info: typing.Optional[typing.Union["MiddlewareSpecPassTlsClientCertInfo", typing.Dict[builtins.str, typing.Any]]] = None,
        pem: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''PassTLSClientCert holds the pass TLS client cert middleware configuration.

        This middleware adds the selected data from the passed client TLS certificate to a header.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/passtlsclientcert/

        :param info: Info selects the specific client certificate details you want to add to the X-Forwarded-Tls-Client-Cert-Info header.
        :param pem: PEM sets the X-Forwarded-Tls-Client-Cert header with the certificate.

        :schema: MiddlewareSpecPassTlsClientCert
        '''
        if isinstance(info, dict):
            info = MiddlewareSpecPassTlsClientCertInfo(**info)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__2db4e25a471ffdfe4998b0185ccac042a648cdb283498c45d47e616b2a6aa687)
            check_type(argname="argument info", value=info, expected_type=type_hints["info"])
            check_type(argname="argument pem", value=pem, expected_type=type_hints["pem"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if info is not None:
            self._values["info"] = info
        if pem is not None:
            self._values["pem"] = pem

    @builtins.property
    def info(self) -> typing.Optional["MiddlewareSpecPassTlsClientCertInfo"]:
        '''Info selects the specific client certificate details you want to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :schema: MiddlewareSpecPassTlsClientCert#info
        '''
        result = self._values.get("info")
        return typing.cast(typing.Optional["MiddlewareSpecPassTlsClientCertInfo"], result)

    @builtins.property
    def pem(self) -> typing.Optional[builtins.bool]:
        '''PEM sets the X-Forwarded-Tls-Client-Cert header with the certificate.

        :schema: MiddlewareSpecPassTlsClientCert#pem
        '''
        result = self._values.get("pem")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecPassTlsClientCert(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecPassTlsClientCertInfo",
    jsii_struct_bases=[],
    name_mapping={
        "issuer": "issuer",
        "not_after": "notAfter",
        "not_before": "notBefore",
        "sans": "sans",
        "serial_number": "serialNumber",
        "subject": "subject",
    },
)
class MiddlewareSpecPassTlsClientCertInfo:
    def __init__(
        self,
        *,
        issuer: typing.Optional[typing.Union["MiddlewareSpecPassTlsClientCertInfoIssuer", typing.Dict[builtins.str, typing.Any]]] = None,
        not_after: typing.Optional[builtins.bool] = None,
        not_before: typing.Optional[builtins.bool] = None,
        sans: typing.Optional[builtins.bool] = None,
        serial_number: typing.Optional[builtins.bool] = None,
        subject: typing.Optional[typing.Union["MiddlewareSpecPassTlsClientCertInfoSubject", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''Info selects the specific client certificate details you want to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :param issuer: Issuer defines the client certificate issuer details to add to the X-Forwarded-Tls-Client-Cert-Info header.
        :param not_after: NotAfter defines whether to add the Not After information from the Validity part.
        :param not_before: NotBefore defines whether to add the Not Before information from the Validity part.
        :param sans: Sans defines whether to add the Subject Alternative Name information from the Subject Alternative Name part.
        :param serial_number: SerialNumber defines whether to add the client serialNumber information.
        :param subject: Subject defines the client certificate subject details to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :schema: MiddlewareSpecPassTlsClientCertInfo
        '''
        if isinstance(issuer, dict):
            issuer = MiddlewareSpecPassTlsClientCertInfoIssuer(**issuer)
        if isinstance(subject, dict):
            subject = MiddlewareSpecPassTlsClientCertInfoSubject(**subject)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__903be3c906f6d7d562798d2c58c3d5cd1cf6b811c372bbd34d203f9130f79ec0)
            check_type(argname="argument issuer", value=issuer, expected_type=type_hints["issuer"])
            check_type(argname="argument not_after", value=not_after, expected_type=type_hints["not_after"])
            check_type(argname="argument not_before", value=not_before, expected_type=type_hints["not_before"])
            check_type(argname="argument sans", value=sans, expected_type=type_hints["sans"])
            check_type(argname="argument serial_number", value=serial_number, expected_type=type_hints["serial_number"])
            check_type(argname="argument subject", value=subject, expected_type=type_hints["subject"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if issuer is not None:
            self._values["issuer"] = issuer
        if not_after is not None:
            self._values["not_after"] = not_after
        if not_before is not None:
            self._values["not_before"] = not_before
        if sans is not None:
            self._values["sans"] = sans
        if serial_number is not None:
            self._values["serial_number"] = serial_number
        if subject is not None:
            self._values["subject"] = subject

    @builtins.property
    def issuer(self) -> typing.Optional["MiddlewareSpecPassTlsClientCertInfoIssuer"]:
        '''Issuer defines the client certificate issuer details to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :schema: MiddlewareSpecPassTlsClientCertInfo#issuer
        '''
        result = self._values.get("issuer")
        return typing.cast(typing.Optional["MiddlewareSpecPassTlsClientCertInfoIssuer"], result)

    @builtins.property
    def not_after(self) -> typing.Optional[builtins.bool]:
        '''NotAfter defines whether to add the Not After information from the Validity part.

        :schema: MiddlewareSpecPassTlsClientCertInfo#notAfter
        '''
        result = self._values.get("not_after")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def not_before(self) -> typing.Optional[builtins.bool]:
        '''NotBefore defines whether to add the Not Before information from the Validity part.

        :schema: MiddlewareSpecPassTlsClientCertInfo#notBefore
        '''
        result = self._values.get("not_before")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def sans(self) -> typing.Optional[builtins.bool]:
        '''Sans defines whether to add the Subject Alternative Name information from the Subject Alternative Name part.

        :schema: MiddlewareSpecPassTlsClientCertInfo#sans
        '''
        result = self._values.get("sans")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def serial_number(self) -> typing.Optional[builtins.bool]:
        '''SerialNumber defines whether to add the client serialNumber information.

        :schema: MiddlewareSpecPassTlsClientCertInfo#serialNumber
        '''
        result = self._values.get("serial_number")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def subject(self) -> typing.Optional["MiddlewareSpecPassTlsClientCertInfoSubject"]:
        '''Subject defines the client certificate subject details to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :schema: MiddlewareSpecPassTlsClientCertInfo#subject
        '''
        result = self._values.get("subject")
        return typing.cast(typing.Optional["MiddlewareSpecPassTlsClientCertInfoSubject"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecPassTlsClientCertInfo(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecPassTlsClientCertInfoIssuer",
    jsii_struct_bases=[],
    name_mapping={
        "common_name": "commonName",
        "country": "country",
        "domain_component": "domainComponent",
        "locality": "locality",
        "organization": "organization",
        "province": "province",
        "serial_number": "serialNumber",
    },
)
class MiddlewareSpecPassTlsClientCertInfoIssuer:
    def __init__(
        self,
        *,
        common_name: typing.Optional[builtins.bool] = None,
        country: typing.Optional[builtins.bool] = None,
        domain_component: typing.Optional[builtins.bool] = None,
        locality: typing.Optional[builtins.bool] = None,
        organization: typing.Optional[builtins.bool] = None,
        province: typing.Optional[builtins.bool] = None,
        serial_number: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''Issuer defines the client certificate issuer details to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :param common_name: CommonName defines whether to add the organizationalUnit information into the issuer.
        :param country: Country defines whether to add the country information into the issuer.
        :param domain_component: DomainComponent defines whether to add the domainComponent information into the issuer.
        :param locality: Locality defines whether to add the locality information into the issuer.
        :param organization: Organization defines whether to add the organization information into the issuer.
        :param province: Province defines whether to add the province information into the issuer.
        :param serial_number: SerialNumber defines whether to add the serialNumber information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__a2c5de257a0f67bff09556f3aa118b7f17e559817293102078d62d0a87bca50e)
            check_type(argname="argument common_name", value=common_name, expected_type=type_hints["common_name"])
            check_type(argname="argument country", value=country, expected_type=type_hints["country"])
            check_type(argname="argument domain_component", value=domain_component, expected_type=type_hints["domain_component"])
            check_type(argname="argument locality", value=locality, expected_type=type_hints["locality"])
            check_type(argname="argument organization", value=organization, expected_type=type_hints["organization"])
            check_type(argname="argument province", value=province, expected_type=type_hints["province"])
            check_type(argname="argument serial_number", value=serial_number, expected_type=type_hints["serial_number"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if common_name is not None:
            self._values["common_name"] = common_name
        if country is not None:
            self._values["country"] = country
        if domain_component is not None:
            self._values["domain_component"] = domain_component
        if locality is not None:
            self._values["locality"] = locality
        if organization is not None:
            self._values["organization"] = organization
        if province is not None:
            self._values["province"] = province
        if serial_number is not None:
            self._values["serial_number"] = serial_number

    @builtins.property
    def common_name(self) -> typing.Optional[builtins.bool]:
        '''CommonName defines whether to add the organizationalUnit information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#commonName
        '''
        result = self._values.get("common_name")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def country(self) -> typing.Optional[builtins.bool]:
        '''Country defines whether to add the country information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#country
        '''
        result = self._values.get("country")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def domain_component(self) -> typing.Optional[builtins.bool]:
        '''DomainComponent defines whether to add the domainComponent information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#domainComponent
        '''
        result = self._values.get("domain_component")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def locality(self) -> typing.Optional[builtins.bool]:
        '''Locality defines whether to add the locality information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#locality
        '''
        result = self._values.get("locality")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def organization(self) -> typing.Optional[builtins.bool]:
        '''Organization defines whether to add the organization information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#organization
        '''
        result = self._values.get("organization")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def province(self) -> typing.Optional[builtins.bool]:
        '''Province defines whether to add the province information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#province
        '''
        result = self._values.get("province")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def serial_number(self) -> typing.Optional[builtins.bool]:
        '''SerialNumber defines whether to add the serialNumber information into the issuer.

        :schema: MiddlewareSpecPassTlsClientCertInfoIssuer#serialNumber
        '''
        result = self._values.get("serial_number")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecPassTlsClientCertInfoIssuer(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecPassTlsClientCertInfoSubject",
    jsii_struct_bases=[],
    name_mapping={
        "common_name": "commonName",
        "country": "country",
        "domain_component": "domainComponent",
        "locality": "locality",
        "organization": "organization",
        "organizational_unit": "organizationalUnit",
        "province": "province",
        "serial_number": "serialNumber",
    },
)
class MiddlewareSpecPassTlsClientCertInfoSubject:
    def __init__(
        self,
        *,
        common_name: typing.Optional[builtins.bool] = None,
        country: typing.Optional[builtins.bool] = None,
        domain_component: typing.Optional[builtins.bool] = None,
        locality: typing.Optional[builtins.bool] = None,
        organization: typing.Optional[builtins.bool] = None,
        organizational_unit: typing.Optional[builtins.bool] = None,
        province: typing.Optional[builtins.bool] = None,
        serial_number: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''Subject defines the client certificate subject details to add to the X-Forwarded-Tls-Client-Cert-Info header.

        :param common_name: CommonName defines whether to add the organizationalUnit information into the subject.
        :param country: Country defines whether to add the country information into the subject.
        :param domain_component: DomainComponent defines whether to add the domainComponent information into the subject.
        :param locality: Locality defines whether to add the locality information into the subject.
        :param organization: Organization defines whether to add the organization information into the subject.
        :param organizational_unit: OrganizationalUnit defines whether to add the organizationalUnit information into the subject.
        :param province: Province defines whether to add the province information into the subject.
        :param serial_number: SerialNumber defines whether to add the serialNumber information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__4ec693c60fddc187bc006fca066960af1513d5caf6f320a083af8d3a356d8fe1)
            check_type(argname="argument common_name", value=common_name, expected_type=type_hints["common_name"])
            check_type(argname="argument country", value=country, expected_type=type_hints["country"])
            check_type(argname="argument domain_component", value=domain_component, expected_type=type_hints["domain_component"])
            check_type(argname="argument locality", value=locality, expected_type=type_hints["locality"])
            check_type(argname="argument organization", value=organization, expected_type=type_hints["organization"])
            check_type(argname="argument organizational_unit", value=organizational_unit, expected_type=type_hints["organizational_unit"])
            check_type(argname="argument province", value=province, expected_type=type_hints["province"])
            check_type(argname="argument serial_number", value=serial_number, expected_type=type_hints["serial_number"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if common_name is not None:
            self._values["common_name"] = common_name
        if country is not None:
            self._values["country"] = country
        if domain_component is not None:
            self._values["domain_component"] = domain_component
        if locality is not None:
            self._values["locality"] = locality
        if organization is not None:
            self._values["organization"] = organization
        if organizational_unit is not None:
            self._values["organizational_unit"] = organizational_unit
        if province is not None:
            self._values["province"] = province
        if serial_number is not None:
            self._values["serial_number"] = serial_number

    @builtins.property
    def common_name(self) -> typing.Optional[builtins.bool]:
        '''CommonName defines whether to add the organizationalUnit information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#commonName
        '''
        result = self._values.get("common_name")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def country(self) -> typing.Optional[builtins.bool]:
        '''Country defines whether to add the country information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#country
        '''
        result = self._values.get("country")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def domain_component(self) -> typing.Optional[builtins.bool]:
        '''DomainComponent defines whether to add the domainComponent information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#domainComponent
        '''
        result = self._values.get("domain_component")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def locality(self) -> typing.Optional[builtins.bool]:
        '''Locality defines whether to add the locality information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#locality
        '''
        result = self._values.get("locality")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def organization(self) -> typing.Optional[builtins.bool]:
        '''Organization defines whether to add the organization information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#organization
        '''
        result = self._values.get("organization")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def organizational_unit(self) -> typing.Optional[builtins.bool]:
        '''OrganizationalUnit defines whether to add the organizationalUnit information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#organizationalUnit
        '''
        result = self._values.get("organizational_unit")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def province(self) -> typing.Optional[builtins.bool]:
        '''Province defines whether to add the province information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#province
        '''
        result = self._values.get("province")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def serial_number(self) -> typing.Optional[builtins.bool]:
        '''SerialNumber defines whether to add the serialNumber information into the subject.

        :schema: MiddlewareSpecPassTlsClientCertInfoSubject#serialNumber
        '''
        result = self._values.get("serial_number")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecPassTlsClientCertInfoSubject(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRateLimit",
    jsii_struct_bases=[],
    name_mapping={
        "average": "average",
        "burst": "burst",
        "period": "period",
        "redis": "redis",
        "source_criterion": "sourceCriterion",
    },
)
class MiddlewareSpecRateLimit:
    def __init__(
        self,
        *,
        average: typing.Optional[jsii.Number] = None,
        burst: typing.Optional[jsii.Number] = None,
        period: typing.Optional["MiddlewareSpecRateLimitPeriod"] = None,
        redis: typing.Optional[typing.Union["MiddlewareSpecRateLimitRedis", typing.Dict[builtins.str, typing.Any]]] = None,
        source_criterion: typing.Optional[typing.Union["MiddlewareSpecRateLimitSourceCriterion", typing.Dict[builtins.str, typing.Any]]] = None,
    ) -> None:
        '''RateLimit holds the rate limit configuration.

        This middleware ensures that services will receive a fair amount of requests, and allows one to define what fair is.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/ratelimit/

        :param average: Average is the maximum rate, by default in requests/s, allowed for the given source. It defaults to 0, which means no rate limiting. The rate is actually defined by dividing Average by Period. So for a rate below 1req/s, one needs to define a Period larger than a second.
        :param burst: Burst is the maximum number of requests allowed to arrive in the same arbitrarily small period of time. It defaults to 1.
        :param period: Period, in combination with Average, defines the actual maximum rate, such as: r = Average / Period. It defaults to a second.
        :param redis: Redis hold the configs of Redis as bucket in rate limiter.
        :param source_criterion: SourceCriterion defines what criterion is used to group requests as originating from a common source. If several strategies are defined at the same time, an error will be raised. If none are set, the default is to use the request's remote address field (as an ipStrategy).

        :schema: MiddlewareSpecRateLimit
        '''
        if isinstance(redis, dict):
            redis = MiddlewareSpecRateLimitRedis(**redis)
        if isinstance(source_criterion, dict):
            source_criterion = MiddlewareSpecRateLimitSourceCriterion(**source_criterion)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__244881ff4a61467371228078d28dd1381c14f64f749475029bbd17d8c14f24c1)
            check_type(argname="argument average", value=average, expected_type=type_hints["average"])
            check_type(argname="argument burst", value=burst, expected_type=type_hints["burst"])
            check_type(argname="argument period", value=period, expected_type=type_hints["period"])
            check_type(argname="argument redis", value=redis, expected_type=type_hints["redis"])
            check_type(argname="argument source_criterion", value=source_criterion, expected_type=type_hints["source_criterion"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if average is not None:
            self._values["average"] = average
        if burst is not None:
            self._values["burst"] = burst
        if period is not None:
            self._values["period"] = period
        if redis is not None:
            self._values["redis"] = redis
        if source_criterion is not None:
            self._values["source_criterion"] = source_criterion

    @builtins.property
    def average(self) -> typing.Optional[jsii.Number]:
        '''Average is the maximum rate, by default in requests/s, allowed for the given source.

        It defaults to 0, which means no rate limiting.
        The rate is actually defined by dividing Average by Period. So for a rate below 1req/s,
        one needs to define a Period larger than a second.

        :schema: MiddlewareSpecRateLimit#average
        '''
        result = self._values.get("average")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def burst(self) -> typing.Optional[jsii.Number]:
        '''Burst is the maximum number of requests allowed to arrive in the same arbitrarily small period of time.

        It defaults to 1.

        :schema: MiddlewareSpecRateLimit#burst
        '''
        result = self._values.get("burst")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def period(self) -> typing.Optional["MiddlewareSpecRateLimitPeriod"]:
        '''Period, in combination with Average, defines the actual maximum rate, such as: r = Average / Period.

        It defaults to a second.

        :schema: MiddlewareSpecRateLimit#period
        '''
        result = self._values.get("period")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitPeriod"], result)

    @builtins.property
    def redis(self) -> typing.Optional["MiddlewareSpecRateLimitRedis"]:
        '''Redis hold the configs of Redis as bucket in rate limiter.

        :schema: MiddlewareSpecRateLimit#redis
        '''
        result = self._values.get("redis")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitRedis"], result)

    @builtins.property
    def source_criterion(
        self,
    ) -> typing.Optional["MiddlewareSpecRateLimitSourceCriterion"]:
        '''SourceCriterion defines what criterion is used to group requests as originating from a common source.

        If several strategies are defined at the same time, an error will be raised.
        If none are set, the default is to use the request's remote address field (as an ipStrategy).

        :schema: MiddlewareSpecRateLimit#sourceCriterion
        '''
        result = self._values.get("source_criterion")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitSourceCriterion"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRateLimit(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecRateLimitPeriod(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRateLimitPeriod",
):
    '''Period, in combination with Average, defines the actual maximum rate, such as: r = Average / Period.

    It defaults to a second.

    :schema: MiddlewareSpecRateLimitPeriod
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(cls, value: jsii.Number) -> "MiddlewareSpecRateLimitPeriod":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__60bd4574c0de589764fd0d9d359c5748b6eaa00e161e44106821511c35b24bd1)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitPeriod", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(cls, value: builtins.str) -> "MiddlewareSpecRateLimitPeriod":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__49e5c85c5de284f9f89218d929e46878ca40cb09664c74285d6867489fe034a0)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitPeriod", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRateLimitRedis",
    jsii_struct_bases=[],
    name_mapping={
        "db": "db",
        "dial_timeout": "dialTimeout",
        "endpoints": "endpoints",
        "max_active_conns": "maxActiveConns",
        "min_idle_conns": "minIdleConns",
        "pool_size": "poolSize",
        "read_timeout": "readTimeout",
        "secret": "secret",
        "tls": "tls",
        "write_timeout": "writeTimeout",
    },
)
class MiddlewareSpecRateLimitRedis:
    def __init__(
        self,
        *,
        db: typing.Optional[jsii.Number] = None,
        dial_timeout: typing.Optional["MiddlewareSpecRateLimitRedisDialTimeout"] = None,
        endpoints: typing.Optional[typing.Sequence[builtins.str]] = None,
        max_active_conns: typing.Optional[jsii.Number] = None,
        min_idle_conns: typing.Optional[jsii.Number] = None,
        pool_size: typing.Optional[jsii.Number] = None,
        read_timeout: typing.Optional["MiddlewareSpecRateLimitRedisReadTimeout"] = None,
        secret: typing.Optional[builtins.str] = None,
        tls: typing.Optional[typing.Union["MiddlewareSpecRateLimitRedisTls", typing.Dict[builtins.str, typing.Any]]] = None,
        write_timeout: typing.Optional["MiddlewareSpecRateLimitRedisWriteTimeout"] = None,
    ) -> None:
        '''Redis hold the configs of Redis as bucket in rate limiter.

        :param db: DB defines the Redis database that will be selected after connecting to the server.
        :param dial_timeout: DialTimeout sets the timeout for establishing new connections. Default value is 5 seconds.
        :param endpoints: Endpoints contains either a single address or a seed list of host:port addresses. Default value is ["localhost:6379"].
        :param max_active_conns: MaxActiveConns defines the maximum number of connections allocated by the pool at a given time. Default value is 0, meaning there is no limit.
        :param min_idle_conns: MinIdleConns defines the minimum number of idle connections. Default value is 0, and idle connections are not closed by default.
        :param pool_size: PoolSize defines the initial number of socket connections. If the pool runs out of available connections, additional ones will be created beyond PoolSize. This can be limited using MaxActiveConns. // Default value is 0, meaning 10 connections per every available CPU as reported by runtime.GOMAXPROCS.
        :param read_timeout: ReadTimeout defines the timeout for socket read operations. Default value is 3 seconds.
        :param secret: Secret defines the name of the referenced Kubernetes Secret containing Redis credentials.
        :param tls: TLS defines TLS-specific configurations, including the CA, certificate, and key, which can be provided as a file path or file content.
        :param write_timeout: WriteTimeout defines the timeout for socket write operations. Default value is 3 seconds.

        :schema: MiddlewareSpecRateLimitRedis
        '''
        if isinstance(tls, dict):
            tls = MiddlewareSpecRateLimitRedisTls(**tls)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__4988043d0914f8d80d451e41d0bd1e021bfff1df8890b2fbd8a5d07fc5683057)
            check_type(argname="argument db", value=db, expected_type=type_hints["db"])
            check_type(argname="argument dial_timeout", value=dial_timeout, expected_type=type_hints["dial_timeout"])
            check_type(argname="argument endpoints", value=endpoints, expected_type=type_hints["endpoints"])
            check_type(argname="argument max_active_conns", value=max_active_conns, expected_type=type_hints["max_active_conns"])
            check_type(argname="argument min_idle_conns", value=min_idle_conns, expected_type=type_hints["min_idle_conns"])
            check_type(argname="argument pool_size", value=pool_size, expected_type=type_hints["pool_size"])
            check_type(argname="argument read_timeout", value=read_timeout, expected_type=type_hints["read_timeout"])
            check_type(argname="argument secret", value=secret, expected_type=type_hints["secret"])
            check_type(argname="argument tls", value=tls, expected_type=type_hints["tls"])
            check_type(argname="argument write_timeout", value=write_timeout, expected_type=type_hints["write_timeout"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if db is not None:
            self._values["db"] = db
        if dial_timeout is not None:
            self._values["dial_timeout"] = dial_timeout
        if endpoints is not None:
            self._values["endpoints"] = endpoints
        if max_active_conns is not None:
            self._values["max_active_conns"] = max_active_conns
        if min_idle_conns is not None:
            self._values["min_idle_conns"] = min_idle_conns
        if pool_size is not None:
            self._values["pool_size"] = pool_size
        if read_timeout is not None:
            self._values["read_timeout"] = read_timeout
        if secret is not None:
            self._values["secret"] = secret
        if tls is not None:
            self._values["tls"] = tls
        if write_timeout is not None:
            self._values["write_timeout"] = write_timeout

    @builtins.property
    def db(self) -> typing.Optional[jsii.Number]:
        '''DB defines the Redis database that will be selected after connecting to the server.

        :schema: MiddlewareSpecRateLimitRedis#db
        '''
        result = self._values.get("db")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def dial_timeout(
        self,
    ) -> typing.Optional["MiddlewareSpecRateLimitRedisDialTimeout"]:
        '''DialTimeout sets the timeout for establishing new connections.

        Default value is 5 seconds.

        :schema: MiddlewareSpecRateLimitRedis#dialTimeout
        '''
        result = self._values.get("dial_timeout")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitRedisDialTimeout"], result)

    @builtins.property
    def endpoints(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Endpoints contains either a single address or a seed list of host:port addresses.

        Default value is ["localhost:6379"].

        :schema: MiddlewareSpecRateLimitRedis#endpoints
        '''
        result = self._values.get("endpoints")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def max_active_conns(self) -> typing.Optional[jsii.Number]:
        '''MaxActiveConns defines the maximum number of connections allocated by the pool at a given time.

        Default value is 0, meaning there is no limit.

        :schema: MiddlewareSpecRateLimitRedis#maxActiveConns
        '''
        result = self._values.get("max_active_conns")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def min_idle_conns(self) -> typing.Optional[jsii.Number]:
        '''MinIdleConns defines the minimum number of idle connections.

        Default value is 0, and idle connections are not closed by default.

        :schema: MiddlewareSpecRateLimitRedis#minIdleConns
        '''
        result = self._values.get("min_idle_conns")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def pool_size(self) -> typing.Optional[jsii.Number]:
        '''PoolSize defines the initial number of socket connections.

        If the pool runs out of available connections, additional ones will be created beyond PoolSize.
        This can be limited using MaxActiveConns.
        // Default value is 0, meaning 10 connections per every available CPU as reported by runtime.GOMAXPROCS.

        :schema: MiddlewareSpecRateLimitRedis#poolSize
        '''
        result = self._values.get("pool_size")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def read_timeout(
        self,
    ) -> typing.Optional["MiddlewareSpecRateLimitRedisReadTimeout"]:
        '''ReadTimeout defines the timeout for socket read operations.

        Default value is 3 seconds.

        :schema: MiddlewareSpecRateLimitRedis#readTimeout
        '''
        result = self._values.get("read_timeout")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitRedisReadTimeout"], result)

    @builtins.property
    def secret(self) -> typing.Optional[builtins.str]:
        '''Secret defines the name of the referenced Kubernetes Secret containing Redis credentials.

        :schema: MiddlewareSpecRateLimitRedis#secret
        '''
        result = self._values.get("secret")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def tls(self) -> typing.Optional["MiddlewareSpecRateLimitRedisTls"]:
        '''TLS defines TLS-specific configurations, including the CA, certificate, and key, which can be provided as a file path or file content.

        :schema: MiddlewareSpecRateLimitRedis#tls
        '''
        result = self._values.get("tls")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitRedisTls"], result)

    @builtins.property
    def write_timeout(
        self,
    ) -> typing.Optional["MiddlewareSpecRateLimitRedisWriteTimeout"]:
        '''WriteTimeout defines the timeout for socket write operations.

        Default value is 3 seconds.

        :schema: MiddlewareSpecRateLimitRedis#writeTimeout
        '''
        result = self._values.get("write_timeout")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitRedisWriteTimeout"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRateLimitRedis(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecRateLimitRedisDialTimeout(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRateLimitRedisDialTimeout",
):
    '''DialTimeout sets the timeout for establishing new connections.

    Default value is 5 seconds.

    :schema: MiddlewareSpecRateLimitRedisDialTimeout
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecRateLimitRedisDialTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__6933f5eebd8fcea03793566618aabf8cce76c5ecbb23ae92e09835903c145a94)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisDialTimeout", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecRateLimitRedisDialTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__e94c90e45c6420b0f55734b03b4ca3fda02dde5c741927c12880d1bc038c304e)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisDialTimeout", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecRateLimitRedisReadTimeout(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRateLimitRedisReadTimeout",
):
    '''ReadTimeout defines the timeout for socket read operations.

    Default value is 3 seconds.

    :schema: MiddlewareSpecRateLimitRedisReadTimeout
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecRateLimitRedisReadTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__3b80ccf68b147ab12ab9723505163bc7af690dd8c983c79c9ecf4ae0c7236be9)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisReadTimeout", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecRateLimitRedisReadTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__1df182c3cdb35ba6395278e6887d2a59e8f8d7c323397d17097b15a01baf798e)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisReadTimeout", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRateLimitRedisTls",
    jsii_struct_bases=[],
    name_mapping={
        "ca_secret": "caSecret",
        "cert_secret": "certSecret",
        "insecure_skip_verify": "insecureSkipVerify",
    },
)
class MiddlewareSpecRateLimitRedisTls:
    def __init__(
        self,
        *,
        ca_secret: typing.Optional[builtins.str] = None,
        cert_secret: typing.Optional[builtins.str] = None,
        insecure_skip_verify: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''TLS defines TLS-specific configurations, including the CA, certificate, and key, which can be provided as a file path or file content.

        :param ca_secret: CASecret is the name of the referenced Kubernetes Secret containing the CA to validate the server certificate. The CA certificate is extracted from key ``tls.ca`` or ``ca.crt``.
        :param cert_secret: CertSecret is the name of the referenced Kubernetes Secret containing the client certificate. The client certificate is extracted from the keys ``tls.crt`` and ``tls.key``.
        :param insecure_skip_verify: InsecureSkipVerify defines whether the server certificates should be validated.

        :schema: MiddlewareSpecRateLimitRedisTls
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__d4ebb4a3f2eeea2333aaadc45ffa65a62d1245ebc78a393a2dd516911a2d228b)
            check_type(argname="argument ca_secret", value=ca_secret, expected_type=type_hints["ca_secret"])
            check_type(argname="argument cert_secret", value=cert_secret, expected_type=type_hints["cert_secret"])
            check_type(argname="argument insecure_skip_verify", value=insecure_skip_verify, expected_type=type_hints["insecure_skip_verify"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ca_secret is not None:
            self._values["ca_secret"] = ca_secret
        if cert_secret is not None:
            self._values["cert_secret"] = cert_secret
        if insecure_skip_verify is not None:
            self._values["insecure_skip_verify"] = insecure_skip_verify

    @builtins.property
    def ca_secret(self) -> typing.Optional[builtins.str]:
        '''CASecret is the name of the referenced Kubernetes Secret containing the CA to validate the server certificate.

        The CA certificate is extracted from key ``tls.ca`` or ``ca.crt``.

        :schema: MiddlewareSpecRateLimitRedisTls#caSecret
        '''
        result = self._values.get("ca_secret")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def cert_secret(self) -> typing.Optional[builtins.str]:
        '''CertSecret is the name of the referenced Kubernetes Secret containing the client certificate.

        The client certificate is extracted from the keys ``tls.crt`` and ``tls.key``.

        :schema: MiddlewareSpecRateLimitRedisTls#certSecret
        '''
        result = self._values.get("cert_secret")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def insecure_skip_verify(self) -> typing.Optional[builtins.bool]:
        '''InsecureSkipVerify defines whether the server certificates should be validated.

        :schema: MiddlewareSpecRateLimitRedisTls#insecureSkipVerify
        '''
        result = self._values.get("insecure_skip_verify")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRateLimitRedisTls(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecRateLimitRedisWriteTimeout(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRateLimitRedisWriteTimeout",
):
    '''WriteTimeout defines the timeout for socket write operations.

    Default value is 3 seconds.

    :schema: MiddlewareSpecRateLimitRedisWriteTimeout
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(
        cls,
        value: jsii.Number,
    ) -> "MiddlewareSpecRateLimitRedisWriteTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__f18b861b965d5e21f7b34a46d23e01e6f5f86a2f227dd02517205dfd503913cc)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisWriteTimeout", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(
        cls,
        value: builtins.str,
    ) -> "MiddlewareSpecRateLimitRedisWriteTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8632bd14d3cbc5acb7ad6a99b6723928163878b911a3021c120b3216f33e5991)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRateLimitRedisWriteTimeout", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRateLimitSourceCriterion",
    jsii_struct_bases=[],
    name_mapping={
        "ip_strategy": "ipStrategy",
        "request_header_name": "requestHeaderName",
        "request_host": "requestHost",
    },
)
class MiddlewareSpecRateLimitSourceCriterion:
    def __init__(
        self,
        *,
        ip_strategy: typing.Optional[typing.Union["MiddlewareSpecRateLimitSourceCriterionIpStrategy", typing.Dict[builtins.str, typing.Any]]] = None,
        request_header_name: typing.Optional[builtins.str] = None,
        request_host: typing.Optional[builtins.bool] = None,
    ) -> None:
        '''SourceCriterion defines what criterion is used to group requests as originating from a common source.

        If several strategies are defined at the same time, an error will be raised.
        If none are set, the default is to use the request's remote address field (as an ipStrategy).

        :param ip_strategy: IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP. More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy
        :param request_header_name: RequestHeaderName defines the name of the header used to group incoming requests.
        :param request_host: RequestHost defines whether to consider the request Host as the source.

        :schema: MiddlewareSpecRateLimitSourceCriterion
        '''
        if isinstance(ip_strategy, dict):
            ip_strategy = MiddlewareSpecRateLimitSourceCriterionIpStrategy(**ip_strategy)
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__c69a675e107afdbda18af7b8f55796d9efc49a5f968068329135a6a570380605)
            check_type(argname="argument ip_strategy", value=ip_strategy, expected_type=type_hints["ip_strategy"])
            check_type(argname="argument request_header_name", value=request_header_name, expected_type=type_hints["request_header_name"])
            check_type(argname="argument request_host", value=request_host, expected_type=type_hints["request_host"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if ip_strategy is not None:
            self._values["ip_strategy"] = ip_strategy
        if request_header_name is not None:
            self._values["request_header_name"] = request_header_name
        if request_host is not None:
            self._values["request_host"] = request_host

    @builtins.property
    def ip_strategy(
        self,
    ) -> typing.Optional["MiddlewareSpecRateLimitSourceCriterionIpStrategy"]:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :schema: MiddlewareSpecRateLimitSourceCriterion#ipStrategy
        '''
        result = self._values.get("ip_strategy")
        return typing.cast(typing.Optional["MiddlewareSpecRateLimitSourceCriterionIpStrategy"], result)

    @builtins.property
    def request_header_name(self) -> typing.Optional[builtins.str]:
        '''RequestHeaderName defines the name of the header used to group incoming requests.

        :schema: MiddlewareSpecRateLimitSourceCriterion#requestHeaderName
        '''
        result = self._values.get("request_header_name")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def request_host(self) -> typing.Optional[builtins.bool]:
        '''RequestHost defines whether to consider the request Host as the source.

        :schema: MiddlewareSpecRateLimitSourceCriterion#requestHost
        '''
        result = self._values.get("request_host")
        return typing.cast(typing.Optional[builtins.bool], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRateLimitSourceCriterion(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRateLimitSourceCriterionIpStrategy",
    jsii_struct_bases=[],
    name_mapping={
        "depth": "depth",
        "excluded_i_ps": "excludedIPs",
        "ipv6_subnet": "ipv6Subnet",
    },
)
class MiddlewareSpecRateLimitSourceCriterionIpStrategy:
    def __init__(
        self,
        *,
        depth: typing.Optional[jsii.Number] = None,
        excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
        ipv6_subnet: typing.Optional[jsii.Number] = None,
    ) -> None:
        '''IPStrategy holds the IP strategy configuration used by Traefik to determine the client IP.

        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/ipallowlist/#ipstrategy

        :param depth: Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).
        :param excluded_i_ps: ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.
        :param ipv6_subnet: IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP. Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecRateLimitSourceCriterionIpStrategy
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8ee241f755e3b089363cdac7c460a753134eb9bd8a7557f8536571632d5fd99c)
            check_type(argname="argument depth", value=depth, expected_type=type_hints["depth"])
            check_type(argname="argument excluded_i_ps", value=excluded_i_ps, expected_type=type_hints["excluded_i_ps"])
            check_type(argname="argument ipv6_subnet", value=ipv6_subnet, expected_type=type_hints["ipv6_subnet"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if depth is not None:
            self._values["depth"] = depth
        if excluded_i_ps is not None:
            self._values["excluded_i_ps"] = excluded_i_ps
        if ipv6_subnet is not None:
            self._values["ipv6_subnet"] = ipv6_subnet

    @builtins.property
    def depth(self) -> typing.Optional[jsii.Number]:
        '''Depth tells Traefik to use the X-Forwarded-For header and take the IP located at the depth position (starting from the right).

        :schema: MiddlewareSpecRateLimitSourceCriterionIpStrategy#depth
        '''
        result = self._values.get("depth")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def excluded_i_ps(self) -> typing.Optional[typing.List[builtins.str]]:
        '''ExcludedIPs configures Traefik to scan the X-Forwarded-For header and select the first IP not in the list.

        :schema: MiddlewareSpecRateLimitSourceCriterionIpStrategy#excludedIPs
        '''
        result = self._values.get("excluded_i_ps")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def ipv6_subnet(self) -> typing.Optional[jsii.Number]:
        '''IPv6Subnet configures Traefik to consider all IPv6 addresses from the defined subnet as originating from the same IP.

        Applies to RemoteAddrStrategy and DepthStrategy.

        :schema: MiddlewareSpecRateLimitSourceCriterionIpStrategy#ipv6Subnet
        '''
        result = self._values.get("ipv6_subnet")
        return typing.cast(typing.Optional[jsii.Number], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRateLimitSourceCriterionIpStrategy(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRedirectRegex",
    jsii_struct_bases=[],
    name_mapping={
        "permanent": "permanent",
        "regex": "regex",
        "replacement": "replacement",
    },
)
class MiddlewareSpecRedirectRegex:
    def __init__(
        self,
        *,
        permanent: typing.Optional[builtins.bool] = None,
        regex: typing.Optional[builtins.str] = None,
        replacement: typing.Optional[builtins.str] = None,
    ) -> None:
        '''RedirectRegex holds the redirect regex middleware configuration.

        This middleware redirects a request using regex matching and replacement.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectregex/#regex

        :param permanent: Permanent defines whether the redirection is permanent (308).
        :param regex: Regex defines the regex used to match and capture elements from the request URL.
        :param replacement: Replacement defines how to modify the URL to have the new target URL.

        :schema: MiddlewareSpecRedirectRegex
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__b17a8a5d3de709329e36d475463b5fbd7f1acd214cbd161fe1d412f09978f241)
            check_type(argname="argument permanent", value=permanent, expected_type=type_hints["permanent"])
            check_type(argname="argument regex", value=regex, expected_type=type_hints["regex"])
            check_type(argname="argument replacement", value=replacement, expected_type=type_hints["replacement"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if permanent is not None:
            self._values["permanent"] = permanent
        if regex is not None:
            self._values["regex"] = regex
        if replacement is not None:
            self._values["replacement"] = replacement

    @builtins.property
    def permanent(self) -> typing.Optional[builtins.bool]:
        '''Permanent defines whether the redirection is permanent (308).

        :schema: MiddlewareSpecRedirectRegex#permanent
        '''
        result = self._values.get("permanent")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def regex(self) -> typing.Optional[builtins.str]:
        '''Regex defines the regex used to match and capture elements from the request URL.

        :schema: MiddlewareSpecRedirectRegex#regex
        '''
        result = self._values.get("regex")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def replacement(self) -> typing.Optional[builtins.str]:
        '''Replacement defines how to modify the URL to have the new target URL.

        :schema: MiddlewareSpecRedirectRegex#replacement
        '''
        result = self._values.get("replacement")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRedirectRegex(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRedirectScheme",
    jsii_struct_bases=[],
    name_mapping={"permanent": "permanent", "port": "port", "scheme": "scheme"},
)
class MiddlewareSpecRedirectScheme:
    def __init__(
        self,
        *,
        permanent: typing.Optional[builtins.bool] = None,
        port: typing.Optional[builtins.str] = None,
        scheme: typing.Optional[builtins.str] = None,
    ) -> None:
        '''RedirectScheme holds the redirect scheme middleware configuration.

        This middleware redirects requests from a scheme/port to another.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/redirectscheme/

        :param permanent: Permanent defines whether the redirection is permanent. For HTTP GET requests a 301 is returned, otherwise a 308 is returned.
        :param port: Port defines the port of the new URL.
        :param scheme: Scheme defines the scheme of the new URL.

        :schema: MiddlewareSpecRedirectScheme
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__684f1ecd4840c97daa5a1fa835e02fe84666f092779f48616cc1626c79406590)
            check_type(argname="argument permanent", value=permanent, expected_type=type_hints["permanent"])
            check_type(argname="argument port", value=port, expected_type=type_hints["port"])
            check_type(argname="argument scheme", value=scheme, expected_type=type_hints["scheme"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if permanent is not None:
            self._values["permanent"] = permanent
        if port is not None:
            self._values["port"] = port
        if scheme is not None:
            self._values["scheme"] = scheme

    @builtins.property
    def permanent(self) -> typing.Optional[builtins.bool]:
        '''Permanent defines whether the redirection is permanent.

        For HTTP GET requests a 301 is returned, otherwise a 308 is returned.

        :schema: MiddlewareSpecRedirectScheme#permanent
        '''
        result = self._values.get("permanent")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def port(self) -> typing.Optional[builtins.str]:
        '''Port defines the port of the new URL.

        :schema: MiddlewareSpecRedirectScheme#port
        '''
        result = self._values.get("port")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def scheme(self) -> typing.Optional[builtins.str]:
        '''Scheme defines the scheme of the new URL.

        :schema: MiddlewareSpecRedirectScheme#scheme
        '''
        result = self._values.get("scheme")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRedirectScheme(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecReplacePath",
    jsii_struct_bases=[],
    name_mapping={"path": "path"},
)
class MiddlewareSpecReplacePath:
    def __init__(self, *, path: typing.Optional[builtins.str] = None) -> None:
        '''ReplacePath holds the replace path middleware configuration.

        This middleware replaces the path of the request URL and store the original path in an X-Replaced-Path header.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepath/

        :param path: Path defines the path to use as replacement in the request URL.

        :schema: MiddlewareSpecReplacePath
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__77eeff19e68d640d60096453584de1ff6a9ba70f2e0443eabc8cb850f71efd15)
            check_type(argname="argument path", value=path, expected_type=type_hints["path"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if path is not None:
            self._values["path"] = path

    @builtins.property
    def path(self) -> typing.Optional[builtins.str]:
        '''Path defines the path to use as replacement in the request URL.

        :schema: MiddlewareSpecReplacePath#path
        '''
        result = self._values.get("path")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecReplacePath(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecReplacePathRegex",
    jsii_struct_bases=[],
    name_mapping={"regex": "regex", "replacement": "replacement"},
)
class MiddlewareSpecReplacePathRegex:
    def __init__(
        self,
        *,
        regex: typing.Optional[builtins.str] = None,
        replacement: typing.Optional[builtins.str] = None,
    ) -> None:
        '''ReplacePathRegex holds the replace path regex middleware configuration.

        This middleware replaces the path of a URL using regex matching and replacement.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/replacepathregex/

        :param regex: Regex defines the regular expression used to match and capture the path from the request URL.
        :param replacement: Replacement defines the replacement path format, which can include captured variables.

        :schema: MiddlewareSpecReplacePathRegex
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__14e9856d46f1f6800782b5768f523fc94c0e4d02744dea7fac6007a2b841a13d)
            check_type(argname="argument regex", value=regex, expected_type=type_hints["regex"])
            check_type(argname="argument replacement", value=replacement, expected_type=type_hints["replacement"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if regex is not None:
            self._values["regex"] = regex
        if replacement is not None:
            self._values["replacement"] = replacement

    @builtins.property
    def regex(self) -> typing.Optional[builtins.str]:
        '''Regex defines the regular expression used to match and capture the path from the request URL.

        :schema: MiddlewareSpecReplacePathRegex#regex
        '''
        result = self._values.get("regex")
        return typing.cast(typing.Optional[builtins.str], result)

    @builtins.property
    def replacement(self) -> typing.Optional[builtins.str]:
        '''Replacement defines the replacement path format, which can include captured variables.

        :schema: MiddlewareSpecReplacePathRegex#replacement
        '''
        result = self._values.get("replacement")
        return typing.cast(typing.Optional[builtins.str], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecReplacePathRegex(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecRetry",
    jsii_struct_bases=[],
    name_mapping={
        "attempts": "attempts",
        "disable_retry_on_network_error": "disableRetryOnNetworkError",
        "initial_interval": "initialInterval",
        "max_request_body_bytes": "maxRequestBodyBytes",
        "retry_non_idempotent_method": "retryNonIdempotentMethod",
        "status": "status",
        "timeout": "timeout",
    },
)
class MiddlewareSpecRetry:
    def __init__(
        self,
        *,
        attempts: typing.Optional[jsii.Number] = None,
        disable_retry_on_network_error: typing.Optional[builtins.bool] = None,
        initial_interval: typing.Optional["MiddlewareSpecRetryInitialInterval"] = None,
        max_request_body_bytes: typing.Optional[jsii.Number] = None,
        retry_non_idempotent_method: typing.Optional[builtins.bool] = None,
        status: typing.Optional[typing.Sequence[builtins.str]] = None,
        timeout: typing.Optional["MiddlewareSpecRetryTimeout"] = None,
    ) -> None:
        '''Retry holds the retry middleware configuration.

        This middleware reissues requests a given number of times to a backend server if that server does not reply.
        As soon as the server answers, the middleware stops retrying, regardless of the response status.
        More info: https://doc.traefik.io/traefik/v3.7/reference/routing-configuration/http/middlewares/retry/

        :param attempts: Attempts defines how many times the request should be retried.
        :param disable_retry_on_network_error: DisableRetryOnNetworkError defines whether to disable the retry if an error occurs when transmitting the request to the server.
        :param initial_interval: InitialInterval defines the first wait time in the exponential backoff series. The maximum interval is calculated as twice the initialInterval. If unspecified, requests will be retried immediately. The value of initialInterval should be provided in seconds or as a valid duration format, see https://pkg.go.dev/time#ParseDuration.
        :param max_request_body_bytes: MaxRequestBodyBytes defines the maximum size for the request body. Default is ``-1``, which means no limit. Default: 1`, which means no limit.
        :param retry_non_idempotent_method: RetryNonIdempotentMethod activates the retry for non-idempotent methods (POST, LOCK, PATCH).
        :param status: Status defines the range of HTTP status codes to retry on.
        :param timeout: Timeout defines how much time the middleware is allowed to retry the request. The value of timeout should be provided in seconds or as a valid duration format, see https://pkg.go.dev/time#ParseDuration.

        :schema: MiddlewareSpecRetry
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__ac74cf8cd656f65f388a2d5271ef32ea07682c7a720254ccec18961e7f93a9be)
            check_type(argname="argument attempts", value=attempts, expected_type=type_hints["attempts"])
            check_type(argname="argument disable_retry_on_network_error", value=disable_retry_on_network_error, expected_type=type_hints["disable_retry_on_network_error"])
            check_type(argname="argument initial_interval", value=initial_interval, expected_type=type_hints["initial_interval"])
            check_type(argname="argument max_request_body_bytes", value=max_request_body_bytes, expected_type=type_hints["max_request_body_bytes"])
            check_type(argname="argument retry_non_idempotent_method", value=retry_non_idempotent_method, expected_type=type_hints["retry_non_idempotent_method"])
            check_type(argname="argument status", value=status, expected_type=type_hints["status"])
            check_type(argname="argument timeout", value=timeout, expected_type=type_hints["timeout"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if attempts is not None:
            self._values["attempts"] = attempts
        if disable_retry_on_network_error is not None:
            self._values["disable_retry_on_network_error"] = disable_retry_on_network_error
        if initial_interval is not None:
            self._values["initial_interval"] = initial_interval
        if max_request_body_bytes is not None:
            self._values["max_request_body_bytes"] = max_request_body_bytes
        if retry_non_idempotent_method is not None:
            self._values["retry_non_idempotent_method"] = retry_non_idempotent_method
        if status is not None:
            self._values["status"] = status
        if timeout is not None:
            self._values["timeout"] = timeout

    @builtins.property
    def attempts(self) -> typing.Optional[jsii.Number]:
        '''Attempts defines how many times the request should be retried.

        :schema: MiddlewareSpecRetry#attempts
        '''
        result = self._values.get("attempts")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def disable_retry_on_network_error(self) -> typing.Optional[builtins.bool]:
        '''DisableRetryOnNetworkError defines whether to disable the retry if an error occurs when transmitting the request to the server.

        :schema: MiddlewareSpecRetry#disableRetryOnNetworkError
        '''
        result = self._values.get("disable_retry_on_network_error")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def initial_interval(self) -> typing.Optional["MiddlewareSpecRetryInitialInterval"]:
        '''InitialInterval defines the first wait time in the exponential backoff series.

        The maximum interval is calculated as twice the initialInterval.
        If unspecified, requests will be retried immediately.
        The value of initialInterval should be provided in seconds or as a valid duration format,
        see https://pkg.go.dev/time#ParseDuration.

        :schema: MiddlewareSpecRetry#initialInterval
        '''
        result = self._values.get("initial_interval")
        return typing.cast(typing.Optional["MiddlewareSpecRetryInitialInterval"], result)

    @builtins.property
    def max_request_body_bytes(self) -> typing.Optional[jsii.Number]:
        '''MaxRequestBodyBytes defines the maximum size for the request body.

        Default is ``-1``, which means no limit.

        :default: 1`, which means no limit.

        :schema: MiddlewareSpecRetry#maxRequestBodyBytes
        '''
        result = self._values.get("max_request_body_bytes")
        return typing.cast(typing.Optional[jsii.Number], result)

    @builtins.property
    def retry_non_idempotent_method(self) -> typing.Optional[builtins.bool]:
        '''RetryNonIdempotentMethod activates the retry for non-idempotent methods (POST, LOCK, PATCH).

        :schema: MiddlewareSpecRetry#retryNonIdempotentMethod
        '''
        result = self._values.get("retry_non_idempotent_method")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def status(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Status defines the range of HTTP status codes to retry on.

        :schema: MiddlewareSpecRetry#status
        '''
        result = self._values.get("status")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    @builtins.property
    def timeout(self) -> typing.Optional["MiddlewareSpecRetryTimeout"]:
        '''Timeout defines how much time the middleware is allowed to retry the request.

        The value of timeout should be provided in seconds or as a valid duration format,
        see https://pkg.go.dev/time#ParseDuration.

        :schema: MiddlewareSpecRetry#timeout
        '''
        result = self._values.get("timeout")
        return typing.cast(typing.Optional["MiddlewareSpecRetryTimeout"], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecRetry(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


class MiddlewareSpecRetryInitialInterval(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRetryInitialInterval",
):
    '''InitialInterval defines the first wait time in the exponential backoff series.

    The maximum interval is calculated as twice the initialInterval.
    If unspecified, requests will be retried immediately.
    The value of initialInterval should be provided in seconds or as a valid duration format,
    see https://pkg.go.dev/time#ParseDuration.

    :schema: MiddlewareSpecRetryInitialInterval
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(cls, value: jsii.Number) -> "MiddlewareSpecRetryInitialInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__725e9d5f12fa54d2c699b7dc2e6d9a510b3b5baa293ed2a10d896da9c78c901c)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRetryInitialInterval", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(cls, value: builtins.str) -> "MiddlewareSpecRetryInitialInterval":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__74cd67ebbf0b87375842ddf935e3f9cdd2add4001f678c97a1f66798a3df7071)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRetryInitialInterval", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


class MiddlewareSpecRetryTimeout(
    metaclass=jsii.JSIIMeta,
    jsii_type="iotraefik.MiddlewareSpecRetryTimeout",
):
    '''Timeout defines how much time the middleware is allowed to retry the request.

    The value of timeout should be provided in seconds or as a valid duration format,
    see https://pkg.go.dev/time#ParseDuration.

    :schema: MiddlewareSpecRetryTimeout
    '''

    @jsii.member(jsii_name="fromNumber")
    @builtins.classmethod
    def from_number(cls, value: jsii.Number) -> "MiddlewareSpecRetryTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__2d15565d5da676631ac7aa01f95de006928fbb4f414fdcd43b4272ca2f5f15e0)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRetryTimeout", jsii.sinvoke(cls, "fromNumber", [value]))

    @jsii.member(jsii_name="fromString")
    @builtins.classmethod
    def from_string(cls, value: builtins.str) -> "MiddlewareSpecRetryTimeout":
        '''
        :param value: -
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__6c4d9cda5a1b7915c1be7dd349a2ac82f058d21776581c2af6c1ce294fbb85e1)
            check_type(argname="argument value", value=value, expected_type=type_hints["value"])
        return typing.cast("MiddlewareSpecRetryTimeout", jsii.sinvoke(cls, "fromString", [value]))

    @builtins.property
    @jsii.member(jsii_name="value")
    def value(self) -> typing.Union[builtins.str, jsii.Number]:
        return typing.cast(typing.Union[builtins.str, jsii.Number], jsii.get(self, "value"))


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecStripPrefix",
    jsii_struct_bases=[],
    name_mapping={"force_slash": "forceSlash", "prefixes": "prefixes"},
)
class MiddlewareSpecStripPrefix:
    def __init__(
        self,
        *,
        force_slash: typing.Optional[builtins.bool] = None,
        prefixes: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''StripPrefix holds the strip prefix middleware configuration.

        This middleware removes the specified prefixes from the URL path.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefix/

        :param force_slash: Deprecated: ForceSlash option is deprecated, please remove any usage of this option. ForceSlash ensures that the resulting stripped path is not the empty string, by replacing it with / when necessary. Default: true.
        :param prefixes: Prefixes defines the prefixes to strip from the request URL.

        :schema: MiddlewareSpecStripPrefix
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__8746dbf5cf29073b30882531fe093e1c093f44fa8233d47e93e5660cc8c4cd5f)
            check_type(argname="argument force_slash", value=force_slash, expected_type=type_hints["force_slash"])
            check_type(argname="argument prefixes", value=prefixes, expected_type=type_hints["prefixes"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if force_slash is not None:
            self._values["force_slash"] = force_slash
        if prefixes is not None:
            self._values["prefixes"] = prefixes

    @builtins.property
    def force_slash(self) -> typing.Optional[builtins.bool]:
        '''Deprecated: ForceSlash option is deprecated, please remove any usage of this option.

        ForceSlash ensures that the resulting stripped path is not the empty string, by replacing it with / when necessary.
        Default: true.

        :schema: MiddlewareSpecStripPrefix#forceSlash
        '''
        result = self._values.get("force_slash")
        return typing.cast(typing.Optional[builtins.bool], result)

    @builtins.property
    def prefixes(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Prefixes defines the prefixes to strip from the request URL.

        :schema: MiddlewareSpecStripPrefix#prefixes
        '''
        result = self._values.get("prefixes")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecStripPrefix(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


@jsii.data_type(
    jsii_type="iotraefik.MiddlewareSpecStripPrefixRegex",
    jsii_struct_bases=[],
    name_mapping={"regex": "regex"},
)
class MiddlewareSpecStripPrefixRegex:
    def __init__(
        self,
        *,
        regex: typing.Optional[typing.Sequence[builtins.str]] = None,
    ) -> None:
        '''StripPrefixRegex holds the strip prefix regex middleware configuration.

        This middleware removes the matching prefixes from the URL path.
        More info: https://doc.traefik.io/traefik/v3.7/middlewares/http/stripprefixregex/

        :param regex: Regex defines the regular expression to match the path prefix from the request URL.

        :schema: MiddlewareSpecStripPrefixRegex
        '''
        if __debug__:
            type_hints = cached_type_hints(_typecheckingstub__a4b7b138c56bd7e29a5606e389acbcb19dd4a89bf2355611ab3bc4ba069fa5e7)
            check_type(argname="argument regex", value=regex, expected_type=type_hints["regex"])
        self._values: typing.Dict[builtins.str, typing.Any] = {}
        if regex is not None:
            self._values["regex"] = regex

    @builtins.property
    def regex(self) -> typing.Optional[typing.List[builtins.str]]:
        '''Regex defines the regular expression to match the path prefix from the request URL.

        :schema: MiddlewareSpecStripPrefixRegex#regex
        '''
        result = self._values.get("regex")
        return typing.cast(typing.Optional[typing.List[builtins.str]], result)

    def __eq__(self, rhs: typing.Any) -> builtins.bool:
        return isinstance(rhs, self.__class__) and rhs._values == self._values

    def __ne__(self, rhs: typing.Any) -> builtins.bool:
        return not (rhs == self)

    def __repr__(self) -> str:
        return "MiddlewareSpecStripPrefixRegex(%s)" % ", ".join(
            k + "=" + repr(v) for k, v in self._values.items()
        )


__all__ = [
    "Middleware",
    "MiddlewareProps",
    "MiddlewareSpec",
    "MiddlewareSpecAddPrefix",
    "MiddlewareSpecBasicAuth",
    "MiddlewareSpecBuffering",
    "MiddlewareSpecChain",
    "MiddlewareSpecChainMiddlewares",
    "MiddlewareSpecCircuitBreaker",
    "MiddlewareSpecCircuitBreakerCheckPeriod",
    "MiddlewareSpecCircuitBreakerFallbackDuration",
    "MiddlewareSpecCircuitBreakerRecoveryDuration",
    "MiddlewareSpecCompress",
    "MiddlewareSpecContentType",
    "MiddlewareSpecDigestAuth",
    "MiddlewareSpecEncodedCharacters",
    "MiddlewareSpecErrors",
    "MiddlewareSpecErrorsService",
    "MiddlewareSpecErrorsServiceHealthCheck",
    "MiddlewareSpecErrorsServiceHealthCheckInterval",
    "MiddlewareSpecErrorsServiceHealthCheckTimeout",
    "MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval",
    "MiddlewareSpecErrorsServiceKind",
    "MiddlewareSpecErrorsServiceMiddlewares",
    "MiddlewareSpecErrorsServicePassiveHealthCheck",
    "MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow",
    "MiddlewareSpecErrorsServicePort",
    "MiddlewareSpecErrorsServiceResponseForwarding",
    "MiddlewareSpecErrorsServiceSticky",
    "MiddlewareSpecErrorsServiceStickyCookie",
    "MiddlewareSpecErrorsServiceStickyCookieSameSite",
    "MiddlewareSpecErrorsServiceStrategy",
    "MiddlewareSpecForwardAuth",
    "MiddlewareSpecForwardAuthTls",
    "MiddlewareSpecGrpcWeb",
    "MiddlewareSpecHeaders",
    "MiddlewareSpecInFlightReq",
    "MiddlewareSpecInFlightReqSourceCriterion",
    "MiddlewareSpecInFlightReqSourceCriterionIpStrategy",
    "MiddlewareSpecIpAllowList",
    "MiddlewareSpecIpAllowListIpStrategy",
    "MiddlewareSpecIpWhiteList",
    "MiddlewareSpecIpWhiteListIpStrategy",
    "MiddlewareSpecPassTlsClientCert",
    "MiddlewareSpecPassTlsClientCertInfo",
    "MiddlewareSpecPassTlsClientCertInfoIssuer",
    "MiddlewareSpecPassTlsClientCertInfoSubject",
    "MiddlewareSpecRateLimit",
    "MiddlewareSpecRateLimitPeriod",
    "MiddlewareSpecRateLimitRedis",
    "MiddlewareSpecRateLimitRedisDialTimeout",
    "MiddlewareSpecRateLimitRedisReadTimeout",
    "MiddlewareSpecRateLimitRedisTls",
    "MiddlewareSpecRateLimitRedisWriteTimeout",
    "MiddlewareSpecRateLimitSourceCriterion",
    "MiddlewareSpecRateLimitSourceCriterionIpStrategy",
    "MiddlewareSpecRedirectRegex",
    "MiddlewareSpecRedirectScheme",
    "MiddlewareSpecReplacePath",
    "MiddlewareSpecReplacePathRegex",
    "MiddlewareSpecRetry",
    "MiddlewareSpecRetryInitialInterval",
    "MiddlewareSpecRetryTimeout",
    "MiddlewareSpecStripPrefix",
    "MiddlewareSpecStripPrefixRegex",
]

publication.publish()

def _typecheckingstub__86e418a3a27f435d4395c3dcde2a140647a024d420f38b7257072f9c6b1794ed(
    scope: _constructs_77d1e7e8.Construct,
    id: builtins.str,
    *,
    metadata: typing.Union[_cdk8s_d3d9af27.ApiObjectMetadata, typing.Dict[builtins.str, typing.Any]],
    spec: typing.Union[MiddlewareSpec, typing.Dict[builtins.str, typing.Any]],
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__0ad0a9121439c066d74fa5088ed49ce4e127744955cc6dbb3a8767cdfda6014b(
    *,
    metadata: typing.Union[_cdk8s_d3d9af27.ApiObjectMetadata, typing.Dict[builtins.str, typing.Any]],
    spec: typing.Union[MiddlewareSpec, typing.Dict[builtins.str, typing.Any]],
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__ce380cb8b12ed80ca0d30ee521fc5fe712e98775bfbdc1ea67f60bbe039d0d06(
    *,
    add_prefix: typing.Optional[typing.Union[MiddlewareSpecAddPrefix, typing.Dict[builtins.str, typing.Any]]] = None,
    basic_auth: typing.Optional[typing.Union[MiddlewareSpecBasicAuth, typing.Dict[builtins.str, typing.Any]]] = None,
    buffering: typing.Optional[typing.Union[MiddlewareSpecBuffering, typing.Dict[builtins.str, typing.Any]]] = None,
    chain: typing.Optional[typing.Union[MiddlewareSpecChain, typing.Dict[builtins.str, typing.Any]]] = None,
    circuit_breaker: typing.Optional[typing.Union[MiddlewareSpecCircuitBreaker, typing.Dict[builtins.str, typing.Any]]] = None,
    compress: typing.Optional[typing.Union[MiddlewareSpecCompress, typing.Dict[builtins.str, typing.Any]]] = None,
    content_type: typing.Optional[typing.Union[MiddlewareSpecContentType, typing.Dict[builtins.str, typing.Any]]] = None,
    digest_auth: typing.Optional[typing.Union[MiddlewareSpecDigestAuth, typing.Dict[builtins.str, typing.Any]]] = None,
    encoded_characters: typing.Optional[typing.Union[MiddlewareSpecEncodedCharacters, typing.Dict[builtins.str, typing.Any]]] = None,
    errors: typing.Optional[typing.Union[MiddlewareSpecErrors, typing.Dict[builtins.str, typing.Any]]] = None,
    forward_auth: typing.Optional[typing.Union[MiddlewareSpecForwardAuth, typing.Dict[builtins.str, typing.Any]]] = None,
    grpc_web: typing.Optional[typing.Union[MiddlewareSpecGrpcWeb, typing.Dict[builtins.str, typing.Any]]] = None,
    headers: typing.Optional[typing.Union[MiddlewareSpecHeaders, typing.Dict[builtins.str, typing.Any]]] = None,
    in_flight_req: typing.Optional[typing.Union[MiddlewareSpecInFlightReq, typing.Dict[builtins.str, typing.Any]]] = None,
    ip_allow_list: typing.Optional[typing.Union[MiddlewareSpecIpAllowList, typing.Dict[builtins.str, typing.Any]]] = None,
    ip_white_list: typing.Optional[typing.Union[MiddlewareSpecIpWhiteList, typing.Dict[builtins.str, typing.Any]]] = None,
    pass_tls_client_cert: typing.Optional[typing.Union[MiddlewareSpecPassTlsClientCert, typing.Dict[builtins.str, typing.Any]]] = None,
    plugin: typing.Optional[typing.Mapping[builtins.str, typing.Any]] = None,
    rate_limit: typing.Optional[typing.Union[MiddlewareSpecRateLimit, typing.Dict[builtins.str, typing.Any]]] = None,
    redirect_regex: typing.Optional[typing.Union[MiddlewareSpecRedirectRegex, typing.Dict[builtins.str, typing.Any]]] = None,
    redirect_scheme: typing.Optional[typing.Union[MiddlewareSpecRedirectScheme, typing.Dict[builtins.str, typing.Any]]] = None,
    replace_path: typing.Optional[typing.Union[MiddlewareSpecReplacePath, typing.Dict[builtins.str, typing.Any]]] = None,
    replace_path_regex: typing.Optional[typing.Union[MiddlewareSpecReplacePathRegex, typing.Dict[builtins.str, typing.Any]]] = None,
    retry: typing.Optional[typing.Union[MiddlewareSpecRetry, typing.Dict[builtins.str, typing.Any]]] = None,
    strip_prefix: typing.Optional[typing.Union[MiddlewareSpecStripPrefix, typing.Dict[builtins.str, typing.Any]]] = None,
    strip_prefix_regex: typing.Optional[typing.Union[MiddlewareSpecStripPrefixRegex, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__12f602d834db01557f33f1341b7b2664e39ff4e093ec8bfe95b4a01ff756b4ed(
    *,
    prefix: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__f44b2b94f0465ff9c5a595cef2a3c7eebce806857003871d9e0bf166cf06d103(
    *,
    header_field: typing.Optional[builtins.str] = None,
    realm: typing.Optional[builtins.str] = None,
    remove_header: typing.Optional[builtins.bool] = None,
    secret: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__a25a2add0bcfa3486c52dbfed2ef1f5e217975b15d2e936be28460546d81aee8(
    *,
    max_request_body_bytes: typing.Optional[jsii.Number] = None,
    max_response_body_bytes: typing.Optional[jsii.Number] = None,
    mem_request_body_bytes: typing.Optional[jsii.Number] = None,
    mem_response_body_bytes: typing.Optional[jsii.Number] = None,
    retry_expression: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__af930015b1a91aae6bfb8d41eea2d22f70713b0d31b4edd95ac0c0add0f3ee28(
    *,
    middlewares: typing.Optional[typing.Sequence[typing.Union[MiddlewareSpecChainMiddlewares, typing.Dict[builtins.str, typing.Any]]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__11f728571c236bc02754dfdd36d5be449a19812ab57aed23e44c422ff858613f(
    *,
    name: builtins.str,
    namespace: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__fe68d84d92d561464bafe0e87d7698d5cecfc2879232ccae37df19b44d67ebf7(
    *,
    check_period: typing.Optional[MiddlewareSpecCircuitBreakerCheckPeriod] = None,
    expression: typing.Optional[builtins.str] = None,
    fallback_duration: typing.Optional[MiddlewareSpecCircuitBreakerFallbackDuration] = None,
    recovery_duration: typing.Optional[MiddlewareSpecCircuitBreakerRecoveryDuration] = None,
    response_code: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__312c83112051f097e4346bf959a987dfaa9f0a487b78a086cb4b0096407b833a(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b74e4d4efcdd781808219cf6b5b75799291f5459e1243c7bb2351be2e9bc712f(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__929c51a6b61cba72801d18dd3584ec949c8dd993365d0204fe48335e2bfbe3dd(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__34740f301855c6240b01a8ff571c8984a9a91aae9f8f1428aaa308f8c3208670(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__1cb6a45323a149cb52e776be41c9811b948ce54f8cbdb7c128bbc361085b1100(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__9de2b3de8803867dfb741555c71a65561b672013f9a59fcb473338324c51567a(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__73adb7f8059669b6b1c823597d7548279d898a355b8a664fba663e4b39246b76(
    *,
    default_encoding: typing.Optional[builtins.str] = None,
    encodings: typing.Optional[typing.Sequence[builtins.str]] = None,
    excluded_content_types: typing.Optional[typing.Sequence[builtins.str]] = None,
    included_content_types: typing.Optional[typing.Sequence[builtins.str]] = None,
    min_response_body_bytes: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__9a565c48da0c56380c5e1bfebf1880a4f56e4a1b11df709fe7ae1f4eba06845a(
    *,
    auto_detect: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__a0fdccef1cc128524a7a3294bccaaa2345713e23fe355cbfbea4c1d717a6e363(
    *,
    header_field: typing.Optional[builtins.str] = None,
    realm: typing.Optional[builtins.str] = None,
    remove_header: typing.Optional[builtins.bool] = None,
    secret: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__28791eeb44324797f98185056da983d1c59a2fcef5f7201c158688a076d2bf73(
    *,
    allow_encoded_back_slash: typing.Optional[builtins.bool] = None,
    allow_encoded_hash: typing.Optional[builtins.bool] = None,
    allow_encoded_null_character: typing.Optional[builtins.bool] = None,
    allow_encoded_percent: typing.Optional[builtins.bool] = None,
    allow_encoded_question_mark: typing.Optional[builtins.bool] = None,
    allow_encoded_semicolon: typing.Optional[builtins.bool] = None,
    allow_encoded_slash: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__cd803f326a62be408b9be954613601c5ffbf401c7e6ccc28baab83aacb829b4b(
    *,
    error_request_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    query: typing.Optional[builtins.str] = None,
    service: typing.Optional[typing.Union[MiddlewareSpecErrorsService, typing.Dict[builtins.str, typing.Any]]] = None,
    status: typing.Optional[typing.Sequence[builtins.str]] = None,
    status_rewrites: typing.Optional[typing.Mapping[builtins.str, jsii.Number]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__691ddb4a285d0895d2370ad654ae3a13cd178529877f33a06bfccaa41b57817f(
    *,
    name: builtins.str,
    health_check: typing.Optional[typing.Union[MiddlewareSpecErrorsServiceHealthCheck, typing.Dict[builtins.str, typing.Any]]] = None,
    kind: typing.Optional[MiddlewareSpecErrorsServiceKind] = None,
    middlewares: typing.Optional[typing.Sequence[typing.Union[MiddlewareSpecErrorsServiceMiddlewares, typing.Dict[builtins.str, typing.Any]]]] = None,
    namespace: typing.Optional[builtins.str] = None,
    native_lb: typing.Optional[builtins.bool] = None,
    node_port_lb: typing.Optional[builtins.bool] = None,
    pass_host_header: typing.Optional[builtins.bool] = None,
    passive_health_check: typing.Optional[typing.Union[MiddlewareSpecErrorsServicePassiveHealthCheck, typing.Dict[builtins.str, typing.Any]]] = None,
    port: typing.Optional[MiddlewareSpecErrorsServicePort] = None,
    response_forwarding: typing.Optional[typing.Union[MiddlewareSpecErrorsServiceResponseForwarding, typing.Dict[builtins.str, typing.Any]]] = None,
    scheme: typing.Optional[builtins.str] = None,
    servers_transport: typing.Optional[builtins.str] = None,
    sticky: typing.Optional[typing.Union[MiddlewareSpecErrorsServiceSticky, typing.Dict[builtins.str, typing.Any]]] = None,
    strategy: typing.Optional[MiddlewareSpecErrorsServiceStrategy] = None,
    weight: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__d96cc9e0a8a28e13ccd2f8302736388384c6282394d8c80fab75dc61de037142(
    *,
    follow_redirects: typing.Optional[builtins.bool] = None,
    headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
    hostname: typing.Optional[builtins.str] = None,
    interval: typing.Optional[MiddlewareSpecErrorsServiceHealthCheckInterval] = None,
    method: typing.Optional[builtins.str] = None,
    mode: typing.Optional[builtins.str] = None,
    path: typing.Optional[builtins.str] = None,
    port: typing.Optional[jsii.Number] = None,
    scheme: typing.Optional[builtins.str] = None,
    status: typing.Optional[jsii.Number] = None,
    timeout: typing.Optional[MiddlewareSpecErrorsServiceHealthCheckTimeout] = None,
    unhealthy_interval: typing.Optional[MiddlewareSpecErrorsServiceHealthCheckUnhealthyInterval] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__9138f678f44c2f8eda1c18bebd9a157c1cb4799fbb8fd70041a82a1fdd6cd975(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__4aaf6703add54d8566255eba74475df9c159845ef8a8f7d871a6e68f001d35a5(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__2b63f54a82b50c3718eba56b88867cd8fb45f9cd58c5efc693ab6ef5edc78217(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b824d66a211f7a80ecccf8c0a6c6d5623e77b44dff43896597aa646358dca1a8(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b6edff1deb9009fe83b824242fc2bcac6ac9505f401c2619130c9a61f4db96d0(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__270f03c957fcf0bdd2ec1cf05696d9a957c644a36bd844585d9f598817094f9e(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__d79cba40a0d43841d346e0e9506de74e20e3894b7a7cde95fad41ff75a63b46a(
    *,
    name: builtins.str,
    namespace: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__294120ec0262f0c510523ffbb8c57c8692b7f032791ed0a4972a7bf27d61c74c(
    *,
    failure_window: typing.Optional[MiddlewareSpecErrorsServicePassiveHealthCheckFailureWindow] = None,
    max_failed_attempts: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__26275306b7ce57b0bd8882a06387e805f9059649d273867602c797063493ac78(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__9820c63cd7682215c280ac217fb48efd8a6bf67931f426c9db891cf1616a51d8(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b7fa447d4b5eab05f0a22688fcc868c950905aee5f30f406a9ea9c4764780aca(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__43ee3873c79a86025f6d9729ab0617b80d811c6f3e71191b96e26a1afca60b67(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__404b027a86db7b80901f161e9d5d7b797f6de7e2a529e3ba006fe5106920a1cd(
    *,
    flush_interval: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8f801e1457a62300e93630b49225aa5872f4c3ace51dd068e85a5ebd9af1e7f9(
    *,
    cookie: typing.Optional[typing.Union[MiddlewareSpecErrorsServiceStickyCookie, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__db7021f80eb6e50905d386b4a9a8a60caf259fc2d1ba73f3500960f362afc514(
    *,
    domain: typing.Optional[builtins.str] = None,
    http_only: typing.Optional[builtins.bool] = None,
    max_age: typing.Optional[jsii.Number] = None,
    name: typing.Optional[builtins.str] = None,
    path: typing.Optional[builtins.str] = None,
    same_site: typing.Optional[MiddlewareSpecErrorsServiceStickyCookieSameSite] = None,
    secure: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__e88dc306e102cce7643a966f283dfd4d67802cff69eedf8888eb35339e55a206(
    *,
    add_auth_cookies_to_response: typing.Optional[typing.Sequence[builtins.str]] = None,
    address: typing.Optional[builtins.str] = None,
    auth_request_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    auth_response_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    auth_response_headers_regex: typing.Optional[builtins.str] = None,
    auth_signin_url: typing.Optional[builtins.str] = None,
    forward_body: typing.Optional[builtins.bool] = None,
    header_field: typing.Optional[builtins.str] = None,
    max_body_size: typing.Optional[jsii.Number] = None,
    max_response_body_size: typing.Optional[jsii.Number] = None,
    preserve_location_header: typing.Optional[builtins.bool] = None,
    preserve_request_method: typing.Optional[builtins.bool] = None,
    tls: typing.Optional[typing.Union[MiddlewareSpecForwardAuthTls, typing.Dict[builtins.str, typing.Any]]] = None,
    trust_forward_header: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__942f174f4e9d10b6d19c3b8b754dfac4b07b1beba91334a4765a76b537999277(
    *,
    ca_optional: typing.Optional[builtins.bool] = None,
    ca_secret: typing.Optional[builtins.str] = None,
    cert_secret: typing.Optional[builtins.str] = None,
    insecure_skip_verify: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8c0f9f2667037b71c6a16a58195aea49b0d3e7d0280e39328901436982854f01(
    *,
    allow_origins: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__9ef1d5780986fdbb8aac3038564962f4cd2d705e97904e0c91be18d6d3538342(
    *,
    access_control_allow_credentials: typing.Optional[builtins.bool] = None,
    access_control_allow_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    access_control_allow_methods: typing.Optional[typing.Sequence[builtins.str]] = None,
    access_control_allow_origin_list: typing.Optional[typing.Sequence[builtins.str]] = None,
    access_control_allow_origin_list_regex: typing.Optional[typing.Sequence[builtins.str]] = None,
    access_control_expose_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    access_control_max_age: typing.Optional[jsii.Number] = None,
    add_vary_header: typing.Optional[builtins.bool] = None,
    allowed_hosts: typing.Optional[typing.Sequence[builtins.str]] = None,
    browser_xss_filter: typing.Optional[builtins.bool] = None,
    content_security_policy: typing.Optional[builtins.str] = None,
    content_security_policy_report_only: typing.Optional[builtins.str] = None,
    content_type_nosniff: typing.Optional[builtins.bool] = None,
    custom_browser_xss_value: typing.Optional[builtins.str] = None,
    custom_frame_options_value: typing.Optional[builtins.str] = None,
    custom_request_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
    custom_response_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
    feature_policy: typing.Optional[builtins.str] = None,
    force_sts_header: typing.Optional[builtins.bool] = None,
    frame_deny: typing.Optional[builtins.bool] = None,
    hosts_proxy_headers: typing.Optional[typing.Sequence[builtins.str]] = None,
    is_development: typing.Optional[builtins.bool] = None,
    permissions_policy: typing.Optional[builtins.str] = None,
    public_key: typing.Optional[builtins.str] = None,
    referrer_policy: typing.Optional[builtins.str] = None,
    ssl_force_host: typing.Optional[builtins.bool] = None,
    ssl_host: typing.Optional[builtins.str] = None,
    ssl_proxy_headers: typing.Optional[typing.Mapping[builtins.str, builtins.str]] = None,
    ssl_redirect: typing.Optional[builtins.bool] = None,
    ssl_temporary_redirect: typing.Optional[builtins.bool] = None,
    sts_include_subdomains: typing.Optional[builtins.bool] = None,
    sts_preload: typing.Optional[builtins.bool] = None,
    sts_seconds: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__2f1a4559177890cc606211594df71a5ac7b07a031fac65564e91a8d613762ebd(
    *,
    amount: typing.Optional[jsii.Number] = None,
    source_criterion: typing.Optional[typing.Union[MiddlewareSpecInFlightReqSourceCriterion, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8c382c17f0718e21ed2d993ecdb8727a18a361781b1956e1293e77f7310bc7b9(
    *,
    ip_strategy: typing.Optional[typing.Union[MiddlewareSpecInFlightReqSourceCriterionIpStrategy, typing.Dict[builtins.str, typing.Any]]] = None,
    request_header_name: typing.Optional[builtins.str] = None,
    request_host: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__455d955d3f01b2f541018fe6da3569ce7d58563076992a03b2b9f21ceb9551b3(
    *,
    depth: typing.Optional[jsii.Number] = None,
    excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
    ipv6_subnet: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b2382a4e5b40700cf786f3e72440590e2dfd8a0e0643e3a93e06144df11a39c9(
    *,
    ip_strategy: typing.Optional[typing.Union[MiddlewareSpecIpAllowListIpStrategy, typing.Dict[builtins.str, typing.Any]]] = None,
    reject_status_code: typing.Optional[jsii.Number] = None,
    source_range: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__c9856a2f7bd030acbe2c762d2b03fe487060d21c88d8072d023fbdb04564937e(
    *,
    depth: typing.Optional[jsii.Number] = None,
    excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
    ipv6_subnet: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__08120b59d317ad92e738083d09a9cc9a6327c4224f599ba6e24993e7864a1f8a(
    *,
    ip_strategy: typing.Optional[typing.Union[MiddlewareSpecIpWhiteListIpStrategy, typing.Dict[builtins.str, typing.Any]]] = None,
    source_range: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__56605baed59f48b29fa06fa3b24900b98adccd9a14adf8ec25ab966797cb5c50(
    *,
    depth: typing.Optional[jsii.Number] = None,
    excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
    ipv6_subnet: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__2db4e25a471ffdfe4998b0185ccac042a648cdb283498c45d47e616b2a6aa687(
    *,
    info: typing.Optional[typing.Union[MiddlewareSpecPassTlsClientCertInfo, typing.Dict[builtins.str, typing.Any]]] = None,
    pem: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__903be3c906f6d7d562798d2c58c3d5cd1cf6b811c372bbd34d203f9130f79ec0(
    *,
    issuer: typing.Optional[typing.Union[MiddlewareSpecPassTlsClientCertInfoIssuer, typing.Dict[builtins.str, typing.Any]]] = None,
    not_after: typing.Optional[builtins.bool] = None,
    not_before: typing.Optional[builtins.bool] = None,
    sans: typing.Optional[builtins.bool] = None,
    serial_number: typing.Optional[builtins.bool] = None,
    subject: typing.Optional[typing.Union[MiddlewareSpecPassTlsClientCertInfoSubject, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__a2c5de257a0f67bff09556f3aa118b7f17e559817293102078d62d0a87bca50e(
    *,
    common_name: typing.Optional[builtins.bool] = None,
    country: typing.Optional[builtins.bool] = None,
    domain_component: typing.Optional[builtins.bool] = None,
    locality: typing.Optional[builtins.bool] = None,
    organization: typing.Optional[builtins.bool] = None,
    province: typing.Optional[builtins.bool] = None,
    serial_number: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__4ec693c60fddc187bc006fca066960af1513d5caf6f320a083af8d3a356d8fe1(
    *,
    common_name: typing.Optional[builtins.bool] = None,
    country: typing.Optional[builtins.bool] = None,
    domain_component: typing.Optional[builtins.bool] = None,
    locality: typing.Optional[builtins.bool] = None,
    organization: typing.Optional[builtins.bool] = None,
    organizational_unit: typing.Optional[builtins.bool] = None,
    province: typing.Optional[builtins.bool] = None,
    serial_number: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__244881ff4a61467371228078d28dd1381c14f64f749475029bbd17d8c14f24c1(
    *,
    average: typing.Optional[jsii.Number] = None,
    burst: typing.Optional[jsii.Number] = None,
    period: typing.Optional[MiddlewareSpecRateLimitPeriod] = None,
    redis: typing.Optional[typing.Union[MiddlewareSpecRateLimitRedis, typing.Dict[builtins.str, typing.Any]]] = None,
    source_criterion: typing.Optional[typing.Union[MiddlewareSpecRateLimitSourceCriterion, typing.Dict[builtins.str, typing.Any]]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__60bd4574c0de589764fd0d9d359c5748b6eaa00e161e44106821511c35b24bd1(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__49e5c85c5de284f9f89218d929e46878ca40cb09664c74285d6867489fe034a0(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__4988043d0914f8d80d451e41d0bd1e021bfff1df8890b2fbd8a5d07fc5683057(
    *,
    db: typing.Optional[jsii.Number] = None,
    dial_timeout: typing.Optional[MiddlewareSpecRateLimitRedisDialTimeout] = None,
    endpoints: typing.Optional[typing.Sequence[builtins.str]] = None,
    max_active_conns: typing.Optional[jsii.Number] = None,
    min_idle_conns: typing.Optional[jsii.Number] = None,
    pool_size: typing.Optional[jsii.Number] = None,
    read_timeout: typing.Optional[MiddlewareSpecRateLimitRedisReadTimeout] = None,
    secret: typing.Optional[builtins.str] = None,
    tls: typing.Optional[typing.Union[MiddlewareSpecRateLimitRedisTls, typing.Dict[builtins.str, typing.Any]]] = None,
    write_timeout: typing.Optional[MiddlewareSpecRateLimitRedisWriteTimeout] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__6933f5eebd8fcea03793566618aabf8cce76c5ecbb23ae92e09835903c145a94(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__e94c90e45c6420b0f55734b03b4ca3fda02dde5c741927c12880d1bc038c304e(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__3b80ccf68b147ab12ab9723505163bc7af690dd8c983c79c9ecf4ae0c7236be9(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__1df182c3cdb35ba6395278e6887d2a59e8f8d7c323397d17097b15a01baf798e(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__d4ebb4a3f2eeea2333aaadc45ffa65a62d1245ebc78a393a2dd516911a2d228b(
    *,
    ca_secret: typing.Optional[builtins.str] = None,
    cert_secret: typing.Optional[builtins.str] = None,
    insecure_skip_verify: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__f18b861b965d5e21f7b34a46d23e01e6f5f86a2f227dd02517205dfd503913cc(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8632bd14d3cbc5acb7ad6a99b6723928163878b911a3021c120b3216f33e5991(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__c69a675e107afdbda18af7b8f55796d9efc49a5f968068329135a6a570380605(
    *,
    ip_strategy: typing.Optional[typing.Union[MiddlewareSpecRateLimitSourceCriterionIpStrategy, typing.Dict[builtins.str, typing.Any]]] = None,
    request_header_name: typing.Optional[builtins.str] = None,
    request_host: typing.Optional[builtins.bool] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8ee241f755e3b089363cdac7c460a753134eb9bd8a7557f8536571632d5fd99c(
    *,
    depth: typing.Optional[jsii.Number] = None,
    excluded_i_ps: typing.Optional[typing.Sequence[builtins.str]] = None,
    ipv6_subnet: typing.Optional[jsii.Number] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__b17a8a5d3de709329e36d475463b5fbd7f1acd214cbd161fe1d412f09978f241(
    *,
    permanent: typing.Optional[builtins.bool] = None,
    regex: typing.Optional[builtins.str] = None,
    replacement: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__684f1ecd4840c97daa5a1fa835e02fe84666f092779f48616cc1626c79406590(
    *,
    permanent: typing.Optional[builtins.bool] = None,
    port: typing.Optional[builtins.str] = None,
    scheme: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__77eeff19e68d640d60096453584de1ff6a9ba70f2e0443eabc8cb850f71efd15(
    *,
    path: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__14e9856d46f1f6800782b5768f523fc94c0e4d02744dea7fac6007a2b841a13d(
    *,
    regex: typing.Optional[builtins.str] = None,
    replacement: typing.Optional[builtins.str] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__ac74cf8cd656f65f388a2d5271ef32ea07682c7a720254ccec18961e7f93a9be(
    *,
    attempts: typing.Optional[jsii.Number] = None,
    disable_retry_on_network_error: typing.Optional[builtins.bool] = None,
    initial_interval: typing.Optional[MiddlewareSpecRetryInitialInterval] = None,
    max_request_body_bytes: typing.Optional[jsii.Number] = None,
    retry_non_idempotent_method: typing.Optional[builtins.bool] = None,
    status: typing.Optional[typing.Sequence[builtins.str]] = None,
    timeout: typing.Optional[MiddlewareSpecRetryTimeout] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__725e9d5f12fa54d2c699b7dc2e6d9a510b3b5baa293ed2a10d896da9c78c901c(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__74cd67ebbf0b87375842ddf935e3f9cdd2add4001f678c97a1f66798a3df7071(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__2d15565d5da676631ac7aa01f95de006928fbb4f414fdcd43b4272ca2f5f15e0(
    value: jsii.Number,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__6c4d9cda5a1b7915c1be7dd349a2ac82f058d21776581c2af6c1ce294fbb85e1(
    value: builtins.str,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__8746dbf5cf29073b30882531fe093e1c093f44fa8233d47e93e5660cc8c4cd5f(
    *,
    force_slash: typing.Optional[builtins.bool] = None,
    prefixes: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass

def _typecheckingstub__a4b7b138c56bd7e29a5606e389acbcb19dd4a89bf2355611ab3bc4ba069fa5e7(
    *,
    regex: typing.Optional[typing.Sequence[builtins.str]] = None,
) -> None:
    """Type checking stubs"""
    pass
