/* env.c - who am I in the job: rank, world, local rank and where the
 * coordinator is, from the launcher's environment (docs/launch.md). */
#include "yk_daemon.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_get(yk_getenv_fn fn, void *arg, const char *name) {
  const char *v = fn ? fn(name, arg) : getenv(name);
  return (v && *v) ? v : NULL;
}

static int env_int(yk_getenv_fn fn, void *arg, const char *name, int lo, int hi, int *out, yk_diag *d) {
  const char *v = env_get(fn, arg, name);
  if (!v) return YK_ENOTFOUND;
  int64_t x;
  if (yk_parse_i64(v, &x) || x < lo || x > hi)
    return yk_errorf(d, YK_ECONFIG, "environment %s='%s' is not an integer in [%d, %d]", name, v, lo, hi);
  *out = (int)x;
  return 0;
}

/* "host:port" or "[v6]:port" -> host, port. */
static int parse_hostport(const char *s, const char *origin, char *host, size_t cap, int *port, yk_diag *d) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s)
    return yk_errorf(d, YK_ECONFIG, "%s='%s' must be host:port", origin, s);
  const char *h = s;
  size_t hl = (size_t)(colon - s);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') h++, hl -= 2;
  if (hl + 1 > cap) return yk_errorf(d, YK_ECONFIG, "%s='%s': host name too long", origin, s);
  int64_t p;
  if (yk_parse_i64(colon + 1, &p) || p < 1 || p > 65535)
    return yk_errorf(d, YK_ECONFIG, "%s='%s': port '%s' is not in [1, 65535]", origin, s, colon + 1);
  memcpy(host, h, hl);
  host[hl] = 0;
  *port = (int)p;
  return 0;
}

int yk_launch_env_detect(const yk_config *cfg, yk_getenv_fn fn, void *arg, yk_launch_env *e, yk_diag *d) {
  memset(e, 0, sizeof *e);
  e->world = 1;
  e->local_world = 1;
  e->coord_port = (int)cfg->coord.port;
  if (gethostname(e->host, sizeof e->host - 1) != 0) strcpy(e->host, "localhost");
  const char *hn = env_get(fn, arg, "YOKE_HOSTNAME"); /* lets tests name namespace "hosts" */
  if (hn) snprintf(e->host, sizeof e->host, "%s", hn);
  int rc;
  int multi_host = 0;

  if (env_get(fn, arg, "YOKE_RANK") || env_get(fn, arg, "YOKE_WORLD")) {
    e->kind = YK_LAUNCH_YOKE;
    if ((rc = env_int(fn, arg, "YOKE_WORLD", 1, YK_PROTO_MAX_WORLD, &e->world, d)))
      return rc == YK_ENOTFOUND ? yk_errorf(d, YK_ECONFIG, "YOKE_RANK is set but YOKE_WORLD is not") : rc;
    if ((rc = env_int(fn, arg, "YOKE_RANK", 0, e->world - 1, &e->rank, d)))
      return rc == YK_ENOTFOUND ? yk_errorf(d, YK_ECONFIG, "YOKE_WORLD is set but YOKE_RANK is not") : rc;
    e->local_rank = e->rank;
    e->local_world = e->world;
    if ((rc = env_int(fn, arg, "YOKE_LOCAL_RANK", 0, YK_PROTO_MAX_WORLD, &e->local_rank, d)) && rc != YK_ENOTFOUND)
      return rc;
    if ((rc = env_int(fn, arg, "YOKE_LOCAL_WORLD", 1, YK_PROTO_MAX_WORLD, &e->local_world, d)) &&
        rc != YK_ENOTFOUND)
      return rc;
    const char *j = env_get(fn, arg, "YOKE_JOB_ID");
    if (j) snprintf(e->job_tag, sizeof e->job_tag, "%s", j);
  } else if (env_get(fn, arg, "OMPI_COMM_WORLD_RANK")) {
    e->kind = YK_LAUNCH_OPENMPI;
    if ((rc = env_int(fn, arg, "OMPI_COMM_WORLD_SIZE", 1, YK_PROTO_MAX_WORLD, &e->world, d)))
      return rc == YK_ENOTFOUND ? yk_errorf(d, YK_ECONFIG, "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not")
                                : rc;
    if ((rc = env_int(fn, arg, "OMPI_COMM_WORLD_RANK", 0, e->world - 1, &e->rank, d))) return rc;
    e->local_rank = 0;
    e->local_world = e->world;
    if ((rc = env_int(fn, arg, "OMPI_COMM_WORLD_LOCAL_RANK", 0, YK_PROTO_MAX_WORLD, &e->local_rank, d)) &&
        rc != YK_ENOTFOUND)
      return rc;
    if ((rc = env_int(fn, arg, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, YK_PROTO_MAX_WORLD, &e->local_world, d)) &&
        rc != YK_ENOTFOUND)
      return rc;
    multi_host = e->local_world < e->world;
  } else if (env_get(fn, arg, "SLURM_PROCID")) {
    e->kind = YK_LAUNCH_SLURM;
    /* Inside srun the step variables describe this step; the job ones describe
     * the whole allocation (what a batch script sees). */
    rc = env_int(fn, arg, "SLURM_STEP_NUM_TASKS", 1, YK_PROTO_MAX_WORLD, &e->world, d);
    if (rc == YK_ENOTFOUND) rc = env_int(fn, arg, "SLURM_NTASKS", 1, YK_PROTO_MAX_WORLD, &e->world, d);
    if (rc == YK_ENOTFOUND) rc = 0, e->world = 1;
    if (rc) return rc;
    if ((rc = env_int(fn, arg, "SLURM_PROCID", 0, e->world - 1, &e->rank, d))) return rc;
    if ((rc = env_int(fn, arg, "SLURM_LOCALID", 0, YK_PROTO_MAX_WORLD, &e->local_rank, d)) && rc != YK_ENOTFOUND)
      return rc;
    const char *nodes = env_get(fn, arg, "SLURM_STEP_NODELIST");
    if (!nodes) nodes = env_get(fn, arg, "SLURM_JOB_NODELIST");
    if (!nodes) nodes = env_get(fn, arg, "SLURM_NODELIST");
    if (!cfg->coord.host[0] && !env_get(fn, arg, "YOKE_COORD")) {
      if (!nodes)
        return yk_errorf(d, YK_ECONFIG,
                         "SLURM: SLURM_JOB_NODELIST is not set; set coord.host to the coordinator's host");
      rc = yk_hostlist_first(nodes, e->coord_host, sizeof e->coord_host, d);
      if (rc) return yk_errorf(d, YK_ECONFIG, "SLURM_JOB_NODELIST: %s", yk_diag_msg(d, rc));
    }
    const char *j = env_get(fn, arg, "SLURM_JOB_ID");
    if (j) snprintf(e->job_tag, sizeof e->job_tag, "slurm-%s", j);
  } else {
    e->kind = YK_LAUNCH_SINGLE;
  }

  /* Where is the coordinator? */
  const char *yc = env_get(fn, arg, "YOKE_COORD");
  if (yc) {
    rc = parse_hostport(yc, "YOKE_COORD", e->coord_host, sizeof e->coord_host, &e->coord_port, d);
    if (rc) return rc;
    const char *emb = env_get(fn, arg, "YOKE_COORD_EMBED");
    e->embed_coord = (e->rank == 0 && emb && !strcmp(emb, "1"));
    return 0;
  }
  if (cfg->coord.host[0]) {
    /* coord.host may carry a port: "host:port". */
    if (strchr(cfg->coord.host, ':') && cfg->coord.host[0] != ':') {
      rc = parse_hostport(cfg->coord.host, "coord.host", e->coord_host, sizeof e->coord_host, &e->coord_port, d);
      if (rc) return rc;
    } else {
      snprintf(e->coord_host, sizeof e->coord_host, "%s", cfg->coord.host);
    }
  } else if (e->kind == YK_LAUNCH_OPENMPI && multi_host) {
    return yk_errorf(d, YK_ECONFIG,
                     "mpirun across %d hosts: set coord.host to rank 0's host (or export YOKE_COORD=host:port "
                     "and pass it with mpirun -x YOKE_COORD)",
                     e->world / (e->local_world ? e->local_world : 1));
  } else if (!e->coord_host[0]) {
    strcpy(e->coord_host, "127.0.0.1");
  }
  if (e->coord_port == 0 && e->world > 1)
    return yk_errorf(d, YK_ECONFIG, "coord.port=0 (pick a free port) needs `yoke launch`; set coord.port for %s",
                     e->kind == YK_LAUNCH_SLURM ? "srun" : "mpirun");
  e->embed_coord = (e->rank == 0);
  return 0;
}
