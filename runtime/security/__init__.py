"""Authentication, authorization and TLS, all inside the runtime."""

from runtime.security.authz import Decision, Principal, decide
from runtime.security.certs import NodeCertificate
from runtime.security.keystore import KeyStore
from runtime.security.secretbox import SecretBox
from runtime.security.throttle import LoginThrottle

__all__ = ["Decision", "KeyStore", "LoginThrottle", "NodeCertificate", "Principal", "SecretBox", "decide"]
