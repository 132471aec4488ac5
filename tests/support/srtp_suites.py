"""SDES suites the tests hold the media policy to, written out.

Not derived from ``sipshield.edge.media_policy.weak_suite``: that is the code
under test.  NULL encrypts nothing, F8 is legacy, a 32-bit tag can be forged.
"""

WEAK_SUITES = (
    "AES_256_CM_HMAC_SHA1_32",
    "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_32",
    "F8_128_HMAC_SHA1_80",
    "F8_128_HMAC_SHA1_32",
    "NULL_HMAC_SHA1_80",
    "NULL_HMAC_SHA1_32",
)
