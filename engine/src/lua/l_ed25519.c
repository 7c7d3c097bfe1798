/*
 * l_ed25519.c: Ed25519 signatures (OpenSSL), as Discord signs the
 * interactions it posts to an app.
 *
 *   ed25519_verify(public_hex, signature_hex, message) -> boolean
 *   ed25519_sign(seed_hex, message)   -> signature hex (tests, stand-ins)
 *   ed25519_public(seed_hex)          -> public key hex
 *
 * Keys are 32 bytes, signatures 64, all in hex as Discord shows them. A
 * malformed key or signature verifies as false, never raises: it comes
 * from the network.
 */
#include <openssl/evp.h>
#include <string.h>

#include "spool_int.h"

/* Decodes exactly `n` bytes of hex; 0 or -1. */
static int unhex(const char *s, size_t len, unsigned char *out, size_t n) {
  if (len != 2 * n)
    return -1;
  for (size_t i = 0; i < n; i++) {
    int v = 0;
    for (int k = 0; k < 2; k++) {
      char c = s[2 * i + (size_t)k];
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0)
        return -1;
      v = v * 16 + d;
    }
    out[i] = (unsigned char)v;
  }
  return 0;
}

static int l_verify(lua_State *L) {
  size_t klen, slen, mlen;
  const char *key_hex = luaL_checklstring(L, 1, &klen);
  const char *sig_hex = luaL_checklstring(L, 2, &slen);
  const char *msg = luaL_checklstring(L, 3, &mlen);
  unsigned char key[32], sig[64];
  int ok = 0;
  if (unhex(key_hex, klen, key, 32) == 0 &&
      unhex(sig_hex, slen, sig, 64) == 0) {
    EVP_PKEY *pkey =
        EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key, sizeof key);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ok = pkey && ctx &&
         EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
         EVP_DigestVerify(ctx, sig, sizeof sig, (const unsigned char *)msg,
                          mlen) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
  }
  lua_pushboolean(L, ok);
  return 1;
}

static EVP_PKEY *private_key(lua_State *L) {
  size_t len;
  const char *seed_hex = luaL_checklstring(L, 1, &len);
  unsigned char seed[32];
  if (unhex(seed_hex, len, seed, 32) != 0)
    luaL_argerror(L, 1, "a 32-byte key in hex");
  EVP_PKEY *pkey =
      EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
  if (pkey == NULL)
    luaL_error(L, "ed25519: cannot make a key");
  return pkey;
}

static int l_sign(lua_State *L) {
  size_t mlen;
  const char *msg = luaL_checklstring(L, 2, &mlen);
  EVP_PKEY *pkey = private_key(L);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  unsigned char sig[64];
  size_t siglen = sizeof sig;
  int ok =
      ctx && EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
      EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)msg, mlen) == 1;
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  if (!ok)
    return luaL_error(L, "ed25519: signing failed");
  spool__push_hex(L, sig, siglen);
  return 1;
}

static int l_public(lua_State *L) {
  EVP_PKEY *pkey = private_key(L);
  unsigned char pub[32];
  size_t len = sizeof pub;
  int ok = EVP_PKEY_get_raw_public_key(pkey, pub, &len) == 1;
  EVP_PKEY_free(pkey);
  if (!ok)
    return luaL_error(L, "ed25519: no public key");
  spool__push_hex(L, pub, len);
  return 1;
}

void spool__open_ed25519(lua_State *L) {
  lua_pushcfunction(L, l_verify);
  lua_setfield(L, -2, "ed25519_verify");
  lua_pushcfunction(L, l_sign);
  lua_setfield(L, -2, "ed25519_sign");
  lua_pushcfunction(L, l_public);
  lua_setfield(L, -2, "ed25519_public");
}
