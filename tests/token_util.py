"""Helpers for tests that forge or alter tokens."""
import jwt


def claims(token: str) -> dict:
    """A token's claims, unverified."""
    return jwt.decode(token, options={"verify_signature": False})


def resign(token: str, secret, alg: str = "HS256", **changes) -> str:
    """The token's claims with `changes`, signed again with `secret` under its original key id."""
    kid = jwt.get_unverified_header(token)["kid"]
    return jwt.encode({**claims(token), **changes}, secret, algorithm=alg, headers={"kid": kid})
