/* cluster.c - the cluster description of `yoke sim`: one table of keys
 * (type, range, meaning) read from a two-level YAML file and from --set, in
 * the manner of the job config's key table (common/config.c), so the file,
 * the overrides, the messages and the printed assumptions never disagree. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "yk_sim.h"

typedef enum { K_STR, K_INT, K_NUM, K_BOOL, K_GBS, K_FILE } kind;

typedef struct key {
  const char *name;
  kind k;
  size_t off;     /* K_GBS: offset of the yk_coll_model's beta_ns; K_FILE: of the yk_coll_model */
  double min, max;
  const char *doc;
} key;

#define OFF(f) offsetof(yk_sim_cluster, f)
static const key keys[] = {
    {"name", K_STR, OFF(name), 0, 0, "what the cluster is"},
    {"nodes", K_INT, OFF(nodes), 1, 1 << 20, "nodes (--nodes overrides)"},
    {"ranks_per_node", K_INT, OFF(ranks_per_node), 1, 4096, "ranks (devices) per node"},
    {"device.gflops", K_NUM, OFF(gflops), 0, 1e9, "achieved GFLOP/s per rank on the model (measured; 0: peak x mfu)"},
    {"device.peak_tflops", K_NUM, OFF(peak_tflops), 0, 1e6, "peak dense TFLOP/s per rank in the job's precision"},
    {"device.mfu", K_NUM, OFF(mfu), 0, 1, "share of the peak the model's products reach"},
    {"device.mem_gbs", K_NUM, OFF(mem_gbs), 0, 1e6, "device memory bandwidth, GB/s"},
    {"device.mem_gb", K_NUM, OFF(mem_gb), 0, 1e6, "device memory per rank, GB (0: not checked)"},
    {"intra.gbs", K_GBS, OFF(intra.beta_ns), 0, 1e6, "per-rank bandwidth inside a node, GB/s (beta = 1/gbs)"},
    {"intra.latency_us", K_NUM, OFF(intra.alpha_us), 0, 1e6, "per-message latency inside a node, us (alpha)"},
    {"intra.alpha_us", K_NUM, OFF(intra.alpha_us), 0, 1e6, "alpha inside a node, us"},
    {"intra.beta_ns", K_NUM, OFF(intra.beta_ns), 0, 1e6, "beta inside a node, ns per byte"},
    {"intra.gamma_ns", K_NUM, OFF(intra.gamma_ns), 0, 1e6, "reduction time per byte, ns (0: 3 bytes of memory traffic)"},
    {"intra.model_file", K_FILE, OFF(intra), 0, 0, "a `yoke bench coll --calibrate` file for the intra-node link"},
    {"inter.gbs", K_GBS, OFF(inter.beta_ns), 0, 1e6, "network bandwidth of a NODE (all its NICs), GB/s"},
    {"inter.latency_us", K_NUM, OFF(inter.alpha_us), 0, 1e6, "per-message network latency, us (alpha)"},
    {"inter.alpha_us", K_NUM, OFF(inter.alpha_us), 0, 1e6, "alpha across nodes, us"},
    {"inter.beta_ns", K_NUM, OFF(inter.beta_ns), 0, 1e6, "beta across nodes, ns per byte of the node's bandwidth"},
    {"inter.gamma_ns", K_NUM, OFF(inter.gamma_ns), 0, 1e6, "reduction time per byte, ns (0: 3 bytes of memory traffic)"},
    {"inter.model_file", K_FILE, OFF(inter), 0, 0, "a `yoke bench coll --calibrate` file for the network"},
    {"sim.interleave", K_INT, OFF(interleave), 1, 64, "virtual pipeline stages per rank (1: plain 1F1B)"},
    {"sim.tp_overlap", K_NUM, OFF(tp_overlap), 0, 1, "share of TP collectives hidden under compute (0: the engine today)"},
    {"sim.recompute", K_BOOL, OFF(recompute), 0, 1, "activation recomputation (backward re-runs the forward)"},
};
#undef OFF

void yk_sim_cluster_default(yk_sim_cluster *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "unnamed");
  c->nodes = 1;
  c->ranks_per_node = 1;
  c->interleave = 1;
}

static const key *find(const char *name) {
  for (size_t i = 0; i < YK_ARRAY_LEN(keys); i++)
    if (!strcmp(keys[i].name, name)) return &keys[i];
  return NULL;
}

/* The known keys, for an unknown one's message. */
static void key_list(char *buf, size_t cap) {
  size_t o = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < YK_ARRAY_LEN(keys) && o < cap; i++) {
    int n = snprintf(buf + o, cap - o, "%s%s", i ? ", " : "", keys[i].name);
    if (n < 0) break;
    o += (size_t)n;
  }
}

/* Set key k from text v; where = "file:line" or "--set" for messages. */
static int set_value(yk_sim_cluster *c, const key *k, const char *v, const char *where, yk_diag *d) {
  char *base = (char *)c + k->off;
  if (k->k == K_STR) {
    snprintf(base, sizeof c->name, "%s", v);
    return 0;
  }
  if (k->k == K_FILE) return yk_coll_model_load(v, (yk_coll_model *)(void *)base, d);
  if (k->k == K_BOOL) {
    if (!strcmp(v, "true") || !strcmp(v, "1")) *(int *)(void *)base = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0")) *(int *)(void *)base = 0;
    else return yk_errorf(d, YK_ECONFIG, "%s: %s=%s: write true or false", where, k->name, v);
    return 0;
  }
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (end == v || *end || errno || !isfinite(x))
    return yk_errorf(d, YK_ECONFIG, "%s: %s=%s is not a number; write a %s in [%g, %g]", where, k->name, v,
                     k->k == K_INT ? "whole number" : "number", k->min, k->max);
  if (x < k->min || x > k->max || (k->k == K_INT && x != floor(x)))
    return yk_errorf(d, YK_ECONFIG, "%s: %s=%s is out of range; write a %s in [%g, %g] (%s)", where, k->name, v,
                     k->k == K_INT ? "whole number" : "number", k->min, k->max, k->doc);
  if (k->k == K_INT) *(int *)(void *)base = (int)x;
  else if (k->k == K_GBS) {
    if (x <= 0) return yk_errorf(d, YK_ECONFIG, "%s: %s=%s: a bandwidth must be above 0 GB/s", where, k->name, v);
    *(double *)(void *)base = 1.0 / x; /* GB/s -> ns per byte */
  } else *(double *)(void *)base = x;
  return 0;
}

static int set_named(yk_sim_cluster *c, const char *name, const char *v, const char *where, yk_diag *d) {
  const key *k = find(name);
  if (!k) {
    char list[1024];
    key_list(list, sizeof list);
    return yk_errorf(d, YK_ECONFIG, "%s: unknown cluster key '%s' (known: %s)", where, name, list);
  }
  return set_value(c, k, v, where, d);
}

int yk_sim_cluster_set(yk_sim_cluster *c, const char *assignment, yk_diag *d) {
  const char *eq = strchr(assignment, '=');
  char name[64];
  size_t len = eq ? (size_t)(eq - assignment) : strlen(assignment);
  if (len >= sizeof name) return YK_ENOTFOUND;
  memcpy(name, assignment, len);
  name[len] = '\0';
  if (!find(name)) {
    /* a key of a cluster section that is not in the table is the cluster's
     * error; anything else may be a job key */
    static const char *const sections[] = {"device.", "intra.", "inter.", "sim."};
    for (size_t i = 0; i < YK_ARRAY_LEN(sections); i++)
      if (!strncmp(name, sections[i], strlen(sections[i]))) return set_named(c, name, "", "--set", d);
    return YK_ENOTFOUND;
  }
  if (!eq) return yk_errorf(d, YK_EUSAGE, "--set %s: write %s=VALUE", assignment, name);
  return set_named(c, name, eq + 1, "--set", d);
}

int yk_sim_cluster_load(yk_sim_cluster *c, const char *path, yk_diag *d) {
  FILE *f = fopen(path, "r");
  if (!f) return yk_errorf_sys(d, YK_ENOTFOUND, "cannot open the cluster file %s", path);
  snprintf(c->origin, sizeof c->origin, "%s", path);
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    fclose(f);
    return yk_errorf(d, YK_ENOMEM, "%s: cannot initialise the YAML parser", path);
  }
  yaml_parser_set_input_file(&p, f);
  /* Two levels: top-level scalars, and sections (device, intra, inter, sim)
   * holding scalars. `want_key` alternates key and value in a mapping. */
  char section[32] = "", keyname[64] = "", where[300];
  int depth = 0, want_key = 1, rc = 0, done = 0;
  while (!rc && !done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      rc = yk_errorf(d, YK_ECONFIG, "%s:%zu: YAML syntax error: %s", path, p.problem_mark.line + 1,
                     p.problem ? p.problem : "?");
      break;
    }
    snprintf(where, sizeof where, "%s:%zu", path, ev.start_mark.line + 1);
    switch (ev.type) {
    case YAML_STREAM_END_EVENT: done = 1; break;
    case YAML_MAPPING_START_EVENT:
      if (depth == 1 && !want_key && keyname[0]) {
        snprintf(section, sizeof section, "%s", keyname);
        want_key = 1;
      } else if (depth >= 1) {
        rc = yk_errorf(d, YK_ECONFIG, "%s: '%s%s%s' holds a mapping; only sections (device, intra, inter, sim) do", where,
                       section, section[0] ? "." : "", keyname);
      }
      depth++;
      break;
    case YAML_MAPPING_END_EVENT:
      depth--;
      section[0] = '\0';
      want_key = 1;
      break;
    case YAML_SEQUENCE_START_EVENT:
      rc = yk_errorf(d, YK_ECONFIG, "%s: '%s%s%s' is a list; write one value", where, section, section[0] ? "." : "",
                     keyname);
      break;
    case YAML_SCALAR_EVENT: {
      const char *v = (const char *)ev.data.scalar.value;
      if (depth == 0) break;
      if (want_key) {
        snprintf(keyname, sizeof keyname, "%s", v);
        want_key = 0;
        break;
      }
      char full[100];
      snprintf(full, sizeof full, "%s%s%s", section, section[0] ? "." : "", keyname);
      rc = set_named(c, full, v, where, d);
      want_key = 1;
      break;
    }
    default: break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  fclose(f);
  return rc;
}

int yk_sim_cluster_check(const yk_sim_cluster *c, yk_diag *d) {
  const char *o = c->origin[0] ? c->origin : "cluster";
  if (c->gflops <= 0 && (c->peak_tflops <= 0 || c->mfu <= 0))
    return yk_errorf(d, YK_ECONFIG, "%s: no compute rate: set device.gflops (measured) or device.peak_tflops and "
                     "device.mfu", o);
  if (c->mem_gbs <= 0)
    return yk_errorf(d, YK_ECONFIG, "%s: device.mem_gbs is not set: the optimizer update and reductions need the "
                     "device's memory bandwidth", o);
  if (c->ranks_per_node > 1 && c->intra.beta_ns <= 0)
    return yk_errorf(d, YK_ECONFIG, "%s: ranks_per_node=%d but no intra-node link: set intra.gbs (or intra.beta_ns, "
                     "intra.model_file)", o, c->ranks_per_node);
  if (c->inter.beta_ns <= 0)
    return yk_errorf(d, YK_ECONFIG, "%s: no network: set inter.gbs (or inter.beta_ns, inter.model_file)", o);
  return 0;
}

void yk_sim_cluster_write(const yk_sim_cluster *c, FILE *out) {
  for (size_t i = 0; i < YK_ARRAY_LEN(keys); i++) {
    const key *k = &keys[i];
    const char *base = (const char *)c + k->off;
    char v[300];
    switch (k->k) {
    case K_STR: snprintf(v, sizeof v, "%s", base); break;
    case K_INT: snprintf(v, sizeof v, "%d", *(const int *)(const void *)base); break;
    case K_BOOL: snprintf(v, sizeof v, "%s", *(const int *)(const void *)base ? "true" : "false"); break;
    case K_FILE: continue; /* its values are printed as alpha/beta/gamma */
    case K_GBS: {
      double b = *(const double *)(const void *)base;
      snprintf(v, sizeof v, "%.4g", b > 0 ? 1.0 / b : 0);
      break;
    }
    default: snprintf(v, sizeof v, "%.6g", *(const double *)(const void *)base); break;
    }
    if (!strcmp(k->name, "intra.latency_us") || !strcmp(k->name, "inter.latency_us")) continue; /* = alpha_us */
    fprintf(out, "#   %-18s %-12s %s\n", k->name, v, k->doc);
  }
}
