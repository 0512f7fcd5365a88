/* err.c - error codes and diagnostics. */
#include "yk_common.h"

#include <errno.h>
#include <string.h>

const char *yk_strerror(int code) {
  if (code == YK_OK) return "success";
#define YK_ERR_MSG_(name, val, msg) \
  if (code == (val)) return msg;
  YK_ERRNO_MAP(YK_ERR_MSG_)
#undef YK_ERR_MSG_
  return "unknown error";
}

const char *yk_err_name(int code) {
  if (code == YK_OK) return "YK_OK";
#define YK_ERR_NAME_(name, val, msg) \
  if (code == (val)) return "YK_" #name;
  YK_ERRNO_MAP(YK_ERR_NAME_)
#undef YK_ERR_NAME_
  return "YK_UNKNOWN";
}

static int vset(yk_diag *d, int code, int sys_errno, const char *fmt, va_list ap) {
  if (!d) return code;
  d->code = code;
  /* Through a copy: callers wrap the message they got, passing d->msg
   * itself as an argument ("...: %s", yk_diag_msg(d, rc)), and vsnprintf
   * into the buffer it reads from is undefined (it garbled them). */
  char buf[sizeof d->msg];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) buf[0] = '\0';
  if (sys_errno && n >= 0 && (size_t)n < sizeof buf) snprintf(buf + n, sizeof buf - (size_t)n, ": %s", strerror(sys_errno));
  memcpy(d->msg, buf, sizeof buf);
  return code;
}

int yk_errorf(yk_diag *d, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(d, code, 0, fmt, ap);
  va_end(ap);
  return code;
}

int yk_errorf_sys(yk_diag *d, int code, const char *fmt, ...) {
  int e = errno;
  va_list ap;
  va_start(ap, fmt);
  vset(d, code, e ? e : EIO, fmt, ap);
  va_end(ap);
  return code;
}

const char *yk_diag_msg(const yk_diag *d, int code) {
  if (d && d->msg[0]) return d->msg;
  return yk_strerror(code);
}

void yk_diag_clear(yk_diag *d) {
  if (!d) return;
  d->code = 0;
  d->msg[0] = '\0';
}
