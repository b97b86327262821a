#!/usr/bin/env python3
"""Mints keys and tokens for tracegate's auth tests with a third-party library (PyJWT +
cryptography), so that our verifier is tested against tokens we did not sign ourselves.

  jwt_helper.py keys DIR      -> writes rsa/ec/ed key pairs (PEM) into DIR, prints their paths
  jwt_helper.py mint          -> stdin: JSON list of token specs; stdout: JSON list of tokens
  jwt_helper.py jwks          -> stdin: [{"pem", "kid", "alg"}]; stdout: the JWK set (PyJWT's to_jwk)

A spec: {"alg": "RS256", "key_file": "...private.pem"} or {"alg": "HS256", "secret": "..."},
plus "claims" and optional "headers". "craft" builds a hostile token by hand:
  "none"      : header {"alg": <alg>}, no signature
  "hmac_with_file": HS256 whose HMAC key is the bytes of key_file (e.g. an RSA public key)
"""
import base64
import hashlib
import hmac
import json
import os
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_pair(directory, name, private_key):
    priv = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paths = {}
    for suffix, data in (("private", priv), ("public", pub)):
        path = os.path.join(directory, f"{name}.{suffix}.pem")
        with open(path, "wb") as f:
            f.write(data)
        paths[suffix] = path
    return paths


def keys(directory):
    os.makedirs(directory, exist_ok=True)
    out = {
        "rsa": write_pair(directory, "rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "rsa2": write_pair(directory, "rsa2", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "ec": write_pair(directory, "ec", ec.generate_private_key(ec.SECP256R1())),
        "ed": write_pair(directory, "ed", ed25519.Ed25519PrivateKey.generate()),
    }
    print(json.dumps(out))


def mint_one(spec):
    claims = spec.get("claims", {})
    headers = dict(spec.get("headers", {}))
    craft = spec.get("craft")
    if craft == "none":
        header = {"alg": spec["alg"], "typ": "JWT", **headers}
        return b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    if craft == "hmac_with_file":
        header = {"alg": "HS256", "typ": "JWT", **headers}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        with open(spec["key_file"], "rb") as f:
            secret = f.read()
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64(sig)
    if "secret" in spec:
        key = spec["secret"]
    else:
        with open(spec["key_file"], "rb") as f:
            key = f.read()
    return jwt.encode(claims, key, algorithm=spec["alg"], headers=headers or None)


def jwks(specs):
    """specs: [{"pem": public key file, "kid": ..., "alg": ...}] -> a JWK set."""
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    out = []
    for spec in specs:
        with open(spec["pem"], "rb") as f:
            public = serialization.load_pem_public_key(f.read())
        alg = spec.get("alg")
        if alg and alg.startswith(("RS", "PS")):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif alg and alg.startswith("ES"):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk.update({k: v for k, v in spec.items() if k in ("kid", "alg", "use")})
        out.append(jwk)
    return {"keys": out}


def main():
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
    elif sys.argv[1] == "jwks":
        print(json.dumps(jwks(json.load(sys.stdin))))
    elif sys.argv[1] == "mint":
        specs = json.load(sys.stdin)
        print(json.dumps([mint_one(s) for s in specs]))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
