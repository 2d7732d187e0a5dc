"""Settings split by profile: base (shared), dev, stage, prod, build."""
