/* dispatch.c - command tables and the parse step every subcommand shares. */
#include "cli.h"

#include <string.h>

static void list(const char *group, const char *what, const cli_cmd *cmds, int n, FILE *out) {
  int w = 0;
  for (int i = 0; i < n; i++) w = (int)strlen(cmds[i].name) > w ? (int)strlen(cmds[i].name) : w;
  fprintf(out, "usage: %s <%s> [options]\n\n%ss:\n", group, what, what);
  for (int i = 0; i < n; i++) fprintf(out, "  %-*s  %s\n", w, cmds[i].name, cmds[i].summary);
  fprintf(out, "\nRun '%s <%s> --help' for its options.\n", group, what);
}

/* The command a mistyped name most likely meant ("trian" -> train, "lss" ->
 * ls), or NULL. At most two edits, and fewer than the name has letters, so a
 * short unrelated word ("xy" against "ls") suggests nothing; the start of a
 * name ("prep") counts as one edit. */
static const char *nearest(const char *name, const cli_cmd *cmds, int n) {
  const char *best = NULL;
  int bd = 3;
  int len = (int)strlen(name);
  for (int i = 0; i < n; i++) {
    int dist = yk_edit_distance(name, cmds[i].name);
    if (len >= 2 && !strncmp(name, cmds[i].name, (size_t)len)) dist = 1; /* a cut-short name: "prep" */
    if (dist < bd && dist < len) {
      bd = dist;
      best = cmds[i].name;
    }
  }
  return best;
}

int cli_dispatch(const char *group, const char *what, const cli_cmd *cmds, int n, int argc, char **argv) {
  if (argc < 2) {
    list(group, what, cmds, n, stderr);
    return 2;
  }
  if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    list(group, what, cmds, n, stdout);
    return 0;
  }
  for (int i = 0; i < n; i++)
    if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
  const char *near = nearest(argv[1], cmds, n);
  if (near) {
    fprintf(stderr, "%s: unknown %s '%s' (did you mean %s?); '%s --help' lists them\n", group, what, argv[1], near,
            group);
    return 2;
  }
  fprintf(stderr, "%s: unknown %s '%s'\n", group, what, argv[1]);
  list(group, what, cmds, n, stderr);
  return 2;
}

int cli_parse(const yk_cmd_spec *s, int argc, char **argv, void *opts) {
  yk_diag d = {0};
  int rc = yk_args_parse(s, argc, argv, opts, &d);
  return yk_args_exit_code(s, rc, &d);
}

int cli_exit_code(int rc) { return rc == 0 ? 0 : rc == YK_EUSAGE || rc == YK_ECONFIG ? 2 : 1; }
