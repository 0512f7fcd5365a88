/* secret.c - the per-job secret that keys the control protocol's HMAC:
 * from coord.secret_file, env YOKE_SECRET, or freshly generated (OpenSSL). */
#include "yk_daemon.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- secret */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* A secret is text; surrounding whitespace is dropped. An even-length all-hex
 * string is decoded to bytes (what the launcher generates). */
static int secret_parse(const char *s, size_t n, const char *origin, uint8_t *key, size_t *key_len, yk_diag *d) {
  while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  while (n && (*s == ' ' || *s == '\t' || *s == '\n')) s++, n--;
  if (n < 16)
    return yk_errorf(d, YK_ECONFIG, "%s: secret is %zu bytes, need at least 16 (e.g. `openssl rand -hex 32`)",
                     origin, n);
  if (n > 2 * YK_SECRET_MAX)
    return yk_errorf(d, YK_ECONFIG, "%s: secret is %zu bytes, at most %d allowed", origin, n, 2 * YK_SECRET_MAX);
  int hex = (n % 2 == 0);
  for (size_t i = 0; hex && i < n; i++)
    if (hexval((unsigned char)s[i]) < 0) hex = 0;
  if (hex) {
    for (size_t i = 0; i < n / 2; i++)
      key[i] = (uint8_t)(hexval((unsigned char)s[2 * i]) << 4 | hexval((unsigned char)s[2 * i + 1]));
    *key_len = n / 2;
  } else {
    if (n > YK_SECRET_MAX)
      return yk_errorf(d, YK_ECONFIG, "%s: secret is %zu bytes, at most %d allowed", origin, n, YK_SECRET_MAX);
    memcpy(key, s, n);
    *key_len = n;
  }
  return 0;
}

int yk_daemon_secret_load(const yk_config *cfg, uint8_t *key, size_t *key_len, yk_diag *d) {
  *key_len = 0;
  if (cfg && cfg->coord.secret_file[0]) {
    char *buf = NULL;
    size_t len = 0;
    int rc = yk_file_read(cfg->coord.secret_file, &buf, &len, d);
    if (rc) return yk_errorf(d, YK_ECONFIG, "coord.secret_file: %s", yk_diag_msg(d, rc));
    rc = secret_parse(buf, len, cfg->coord.secret_file, key, key_len, d);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return rc;
  }
  const char *env = getenv("YOKE_SECRET");
  if (env && *env) return secret_parse(env, strlen(env), "YOKE_SECRET", key, key_len, d);
  return yk_errorf(d, YK_ENOTFOUND,
                   "no job secret: set coord.secret_file or export YOKE_SECRET (e.g. YOKE_SECRET=$(openssl rand "
                   "-hex 32); mpirun -x YOKE_SECRET ...)");
}

int yk_daemon_secret_generate(char hex[65], yk_diag *d) {
  uint8_t b[32];
  if (RAND_bytes(b, sizeof b) != 1) return yk_errorf(d, YK_ESYS, "RAND_bytes failed: no randomness for a secret");
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  OPENSSL_cleanse(b, sizeof b);
  return 0;
}
