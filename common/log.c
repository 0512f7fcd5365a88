/* log.c - leveled logging with a UTC timestamp and the rank. */
#include "yk_common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *level_tag[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};

void yk_logger_init(yk_logger *lg, int rank, int level, FILE *out) {
  lg->rank = rank;
  lg->level = level;
  lg->out = out;
  lg->info_out = NULL;
  lg->lead = NULL;
}

int yk_log_level_parse(const char *s) {
  static const char *names[] = {"error", "warn", "info", "debug"};
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, names[i]) == 0) return i;
  return -1;
}

void yk_vlog(const yk_logger *lg, int level, const char *fmt, va_list ap) {
  int max = lg ? lg->level : YK_LOG_INFO;
  if (level > max) return;
  if (level < 0) level = 0;
  if (level > 3) level = 3;
  FILE *out = (lg && lg->out) ? lg->out : stderr;
  if (lg && lg->info_out && level >= YK_LOG_INFO) out = lg->info_out;

  /* Build the whole line first so concurrent threads never interleave. */
  char line[4096];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  int n = 0;
  if (lg && lg->lead && isatty(fileno(out))) n = snprintf(line, 32, "%.31s", lg->lead);
  n += (int)strftime(line + n, sizeof line - (size_t)n, "%Y-%m-%dT%H:%M:%S", &tm);
  if (lg && lg->rank >= 0)
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ r%d %s ", (int)(tv.tv_usec / 1000), lg->rank,
                  level_tag[level]);
  else
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ %s ", (int)(tv.tv_usec / 1000), level_tag[level]);
  int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  if (m < 0) m = 0;
  n += m;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  if (line[n - 1] != '\n') line[n++] = '\n';
  fwrite(line, 1, (size_t)n, out);
  fflush(out);
}

void yk_log(const yk_logger *lg, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  yk_vlog(lg, level, fmt, ap);
  va_end(ap);
}

int yk_log_ranks_match(const char *spec, int rank, int *shown, yk_diag *d) {
  *shown = 0;
  if (!strcasecmp(spec, "all")) {
    *shown = 1;
    return 0;
  }
  /* A list of ranks: digits separated by commas (blanks allowed around them). */
  const char *p = spec;
  for (;;) {
    while (*p == ' ') p++;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *p == '-' || *p == '+' || v > 1000000) break;
    if (v == rank) *shown = 1;
    p = end;
    while (*p == ' ') p++;
    if (*p == '\0') return 0;
    if (*p != ',') break;
    p++;
  }
  *shown = 0;
  return yk_errorf(d, YK_ECONFIG, "log.ranks '%s' is not a rank list: write 0, all, or ranks such as 0,3", spec);
}
