/* libFuzzer target for the control protocol's pure decoder.
 *
 * Each input is used twice: as raw bytes off the wire (header checks, MAC
 * refusal), and as header+payload that the harness signs with the test key,
 * so the fuzzer reaches the payload parser behind the HMAC. A frame that
 * decodes must re-encode to the same bytes (the format is canonical). Built
 * with clang -fsanitize=fuzzer,address,undefined by tests/daemon/CMakeLists.txt. */
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "yk_daemon.h"

static const uint8_t KEY[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";

static void check_canonical(const uint8_t *frame, long len, const yk_msg *m) {
  uint8_t *re = NULL;
  size_t rlen = 0;
  if (yk_proto_encode(m, KEY, sizeof KEY, &re, &rlen, NULL) != 0) abort();
  if ((long)rlen != len) abort();
  /* CHALLENGE's payload (the peer's version) is not kept; all else is */
  if (m->type != YK_MSG_CHALLENGE && memcmp(re, frame, rlen) != 0) abort();
  free(re);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  yk_msg m;
  yk_diag d;
  long r = yk_proto_decode(data, size, KEY, sizeof KEY, &m, &d);
  if (r > 0) {
    if ((size_t)r > size) abort();
    check_canonical(data, r, &m);
    yk_msg_free(&m);
  }
  if (size < YK_PROTO_HDR || size > (1u << 16)) return 0;
  uint8_t *buf = malloc(size + 32);
  if (!buf) return 0;
  memcpy(buf, data, size);
  uint32_t plen = (uint32_t)(size - YK_PROTO_HDR);
  uint32_t magic = YK_PROTO_MAGIC;
  memcpy(buf, &magic, 4);
  buf[4] = YK_PROTO_VERSION;
  buf[5] = (uint8_t)(1 + buf[5] % (YK_MSG_TYPE_MAX_ - 1));
  buf[6] = buf[7] = 0;
  memcpy(buf + 8, &plen, 4);
  unsigned int ol = 0;
  HMAC(EVP_sha256(), KEY, sizeof KEY, buf, size, buf + size, &ol);
  r = yk_proto_decode(buf, size + 32, KEY, sizeof KEY, &m, &d);
  if (r == 0 || r > (long)(size + 32)) abort(); /* a whole signed frame never asks for more */
  if (r > 0) {
    check_canonical(buf, r, &m);
    yk_msg_free(&m);
  }
  free(buf);
  return 0;
}
