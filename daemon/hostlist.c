/* hostlist.c - SLURM hostlist expansion: "node[01-04,07]", "a[1-2],b3",
 * "rack[1-2]n[1-3]" (cartesian product of bracket groups). Commas inside
 * brackets separate ranges, commas outside separate host expressions. The
 * width of a range's lower bound sets the zero padding, as SLURM does. */
#include "yk_daemon.h"

#include <stdlib.h>
#include <string.h>

#define MAX_HOSTS (1 << 20) /* refuse lists that would expand past this */
#define MAX_NAME 255

typedef struct {
  char **v;
  int n, cap;
} strvec;

static int vec_push(strvec *s, const char *str, size_t len) {
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 16;
    char **nv = realloc(s->v, (size_t)cap * sizeof *nv);
    if (!nv) return YK_ENOMEM;
    s->v = nv;
    s->cap = cap;
  }
  char *c = malloc(len + 1);
  if (!c) return YK_ENOMEM;
  memcpy(c, str, len);
  c[len] = 0;
  s->v[s->n++] = c;
  return 0;
}

void yk_hostlist_free(char **hosts, int n) {
  if (!hosts) return;
  for (int i = 0; i < n; i++) free(hosts[i]);
  free(hosts);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Parse an unsigned decimal of len chars (no sign, <= 9 digits). */
static int parse_num(const char *s, size_t len, long *out) {
  if (len == 0 || len > 9) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (!is_digit(s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* Expand expr[0..len) (one host expression without top-level commas) with
 * `prefix` already built into buf[0..blen), appending results to out. */
static int expand_expr(const char *expr, size_t len, char *buf, size_t blen, strvec *out, const char *whole,
                       yk_diag *d) {
  const char *br = memchr(expr, '[', len);
  const char *close_any = memchr(expr, ']', br ? (size_t)(br - expr) : len);
  if (close_any)
    return yk_errorf(d, YK_EINVAL, "hostlist '%s': ']' without '[' near '%.*s'", whole, (int)len, expr);
  if (!br) {
    if (blen + len > MAX_NAME) return yk_errorf(d, YK_EINVAL, "hostlist '%s': host name too long", whole);
    memcpy(buf + blen, expr, len);
    if (blen + len == 0) return yk_errorf(d, YK_EINVAL, "hostlist '%s': empty host name", whole);
    if (out->n >= MAX_HOSTS)
      return yk_errorf(d, YK_EINVAL, "hostlist '%s' expands to more than %d hosts", whole, MAX_HOSTS);
    return vec_push(out, buf, blen + len) ? yk_errorf(d, YK_ENOMEM, "out of memory expanding hostlist") : 0;
  }
  size_t plen = (size_t)(br - expr);
  const char *end = memchr(br + 1, ']', len - plen - 1);
  if (!end) return yk_errorf(d, YK_EINVAL, "hostlist '%s': '[' without ']'", whole);
  if (memchr(br + 1, '[', (size_t)(end - br - 1)))
    return yk_errorf(d, YK_EINVAL, "hostlist '%s': nested '[' inside a range", whole);
  if (blen + plen > MAX_NAME) return yk_errorf(d, YK_EINVAL, "hostlist '%s': host name too long", whole);
  memcpy(buf + blen, expr, plen);
  size_t base = blen + plen;
  const char *rest = end + 1;
  size_t rest_len = len - (size_t)(rest - expr);
  /* ranges: "a", "a-b", separated by ',' */
  const char *p = br + 1;
  if (p == end) return yk_errorf(d, YK_EINVAL, "hostlist '%s': empty brackets", whole);
  while (p < end) {
    const char *comma = memchr(p, ',', (size_t)(end - p));
    const char *stop = comma ? comma : end;
    const char *dash = memchr(p, '-', (size_t)(stop - p));
    const char *lo_s = p;
    size_t lo_len = dash ? (size_t)(dash - p) : (size_t)(stop - p);
    long lo, hi;
    if (parse_num(lo_s, lo_len, &lo))
      return yk_errorf(d, YK_EINVAL, "hostlist '%s': bad range '%.*s' (want N or N-M with decimal numbers)", whole,
                       (int)(stop - p), p);
    hi = lo;
    if (dash && parse_num(dash + 1, (size_t)(stop - dash - 1), &hi))
      return yk_errorf(d, YK_EINVAL, "hostlist '%s': bad range '%.*s' (want N or N-M with decimal numbers)", whole,
                       (int)(stop - p), p);
    if (hi < lo)
      return yk_errorf(d, YK_EINVAL, "hostlist '%s': range '%.*s' runs backwards", whole, (int)(stop - p), p);
    if (hi - lo >= MAX_HOSTS)
      return yk_errorf(d, YK_EINVAL, "hostlist '%s' expands to more than %d hosts", whole, MAX_HOSTS);
    int width = (int)lo_len;
    for (long v = lo; v <= hi; v++) {
      char num[16];
      int nl = snprintf(num, sizeof num, "%0*ld", width, v);
      if (base + (size_t)nl > MAX_NAME) return yk_errorf(d, YK_EINVAL, "hostlist '%s': host name too long", whole);
      memcpy(buf + base, num, (size_t)nl);
      int rc = expand_expr(rest, rest_len, buf, base + (size_t)nl, out, whole, d);
      if (rc) return rc;
    }
    p = comma ? comma + 1 : end;
    if (comma && p == end) return yk_errorf(d, YK_EINVAL, "hostlist '%s': trailing ',' inside brackets", whole);
  }
  return 0;
}

int yk_hostlist_expand(const char *list, char ***hosts, int *n, yk_diag *d) {
  *hosts = NULL;
  *n = 0;
  if (!list) return yk_errorf(d, YK_EINVAL, "hostlist is missing");
  strvec out = {0};
  char buf[MAX_NAME + 1];
  const char *p = list;
  size_t total = strlen(list);
  if (total == 0) return yk_errorf(d, YK_EINVAL, "hostlist is empty");
  const char *endall = list + total;
  while (p <= endall) {
    /* find the next top-level comma */
    const char *q = p;
    int depth = 0;
    while (q < endall && !(depth == 0 && *q == ',')) {
      if (*q == '[') depth++;
      if (*q == ']') depth--;
      if (*q == ' ' || *q == '\t' || *q == '\n') {
        yk_hostlist_free(out.v, out.n);
        return yk_errorf(d, YK_EINVAL, "hostlist '%s': unexpected whitespace", list);
      }
      q++;
    }
    if (q == p) {
      yk_hostlist_free(out.v, out.n);
      return yk_errorf(d, YK_EINVAL, "hostlist '%s': empty entry between commas", list);
    }
    int rc = expand_expr(p, (size_t)(q - p), buf, 0, &out, list, d);
    if (rc) {
      yk_hostlist_free(out.v, out.n);
      return rc;
    }
    if (q == endall) break;
    p = q + 1;
    if (p == endall) {
      yk_hostlist_free(out.v, out.n);
      return yk_errorf(d, YK_EINVAL, "hostlist '%s': trailing comma", list);
    }
  }
  *hosts = out.v;
  *n = out.n;
  return 0;
}

int yk_hostlist_first(const char *list, char *out, size_t cap, yk_diag *d) {
  char **h = NULL;
  int n = 0;
  int rc = yk_hostlist_expand(list, &h, &n, d);
  if (rc) return rc;
  if (strlen(h[0]) + 1 > cap) {
    yk_hostlist_free(h, n);
    return yk_errorf(d, YK_EINVAL, "hostlist '%s': first host name too long", list);
  }
  strcpy(out, h[0]);
  yk_hostlist_free(h, n);
  return 0;
}
