"""A toy family that lives outside the library: proof that a family is one model file and
one config (tests/test_family_contract.py)."""
