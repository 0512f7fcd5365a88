/* The step loop's API against a real coordinator, in one process: two ranks'
 * control planes start (rendezvous), see each other's addresses, all-gather
 * twice, report metrics and heartbeat, and when one rank
 * leaves with a failure the other gets SHUTDOWN through poll and its
 * on_abort hook runs. */
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "yk_daemon.h"

static const char SECRET[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  yk_coord *co;
  yk_logger lg;
} coord_thread;

static void on_stop(uv_async_t *a) {
  coord_thread *ct = a->data;
  yk_coord_close(ct->co);
  uv_close((uv_handle_t *)a, NULL);
}
static void run_loop(void *arg) { uv_run(&((coord_thread *)arg)->loop, UV_RUN_DEFAULT); }

typedef struct {
  int rank, port;
  yk_config cfg;
  yk_launch_env env;
  yk_logger lg;
  yk_daemon_ctl *ctl;
  int rc;
  yk_diag d;
  atomic_int aborted;
  int abort_code;
} rank_t;

static void on_abort(void *arg, const yk_daemon_event *ev) {
  rank_t *r = arg;
  r->abort_code = ev->code;
  atomic_store(&r->aborted, 1);
}

static void start_rank(void *arg) {
  rank_t *r = arg;
  yk_config_defaults(&r->cfg);
  r->cfg.coord.heartbeat_ms = 100;
  r->cfg.coord.heartbeat_timeout_ms = 2000;
  memset(&r->env, 0, sizeof r->env);
  r->env.kind = YK_LAUNCH_YOKE;
  r->env.rank = r->rank;
  r->env.world = 2;
  r->env.local_rank = r->rank;
  r->env.local_world = 2;
  snprintf(r->env.host, sizeof r->env.host, "host%d", r->rank);
  strcpy(r->env.coord_host, "127.0.0.1");
  r->env.coord_port = r->port;
  yk_logger_init(&r->lg, r->rank, YK_LOG_INFO, stderr);
  char addr[32];
  int n = snprintf(addr, sizeof addr, "fabric-addr-of-%d", r->rank);
  yk_daemon_ctl_opts o = {0};
  o.cfg = &r->cfg;
  o.env = &r->env;
  o.log = &r->lg;
  o.addr = addr;
  o.addr_len = (size_t)n;
  o.rendezvous_timeout_ms = 10000;
  o.on_abort = on_abort;
  o.abort_arg = r;
  r->rc = yk_daemon_ctl_start(&o, &r->ctl, &r->d);
}

typedef struct {
  rank_t *r;
  uint64_t out[2];
  int rc;
} gather_t;

static void gather(void *arg) {
  gather_t *g = arg;
  uint64_t mine = 1000 + (uint64_t)g->r->rank;
  g->rc = yk_daemon_ctl_allgather(g->r->ctl, &mine, sizeof mine, g->out, yk_deadline_in_ms(5000), NULL);
}

START_TEST(two_ranks) {
  setenv("YOKE_SECRET", SECRET, 1);
  coord_thread ct;
  memset(&ct, 0, sizeof ct);
  yk_logger_init(&ct.lg, -1, YK_LOG_INFO, stderr);
  uv_loop_init(&ct.loop);
  uint8_t key[32];
  for (int i = 0; i < 32; i++) key[i] = (uint8_t)strtol((char[]){SECRET[2 * i], SECRET[2 * i + 1], 0}, NULL, 16);
  yk_coord_opts co = {0};
  co.bind_host = "127.0.0.1";
  co.world = 2;
  co.heartbeat_timeout_ms = 2000;
  co.key = key;
  co.key_len = 32;
  co.log = &ct.lg;
  yk_diag d = {0};
  ck_assert_msg(yk_coord_start(&ct.loop, &co, &ct.co, &d) == 0, "%s", d.msg);
  uv_async_init(&ct.loop, &ct.stop, on_stop);
  ct.stop.data = &ct;
  uv_thread_t cth;
  uv_thread_create(&cth, run_loop, &ct);

  rank_t r[2];
  memset(r, 0, sizeof r);
  uv_thread_t th[2];
  for (int i = 0; i < 2; i++) {
    r[i].rank = i;
    r[i].port = yk_coord_port(ct.co);
    uv_thread_create(&th[i], start_rank, &r[i]);
  }
  for (int i = 0; i < 2; i++) uv_thread_join(&th[i]);
  for (int i = 0; i < 2; i++) ck_assert_msg(r[i].rc == 0, "rank %d: %s", i, r[i].d.msg);

  yk_daemon_job job[2];
  for (int i = 0; i < 2; i++) {
    yk_daemon_ctl_job(r[i].ctl, &job[i]);
    ck_assert_int_eq(job[i].rank, i);
    ck_assert_int_eq(job[i].world, 2);
    ck_assert_int_eq(job[i].epoch, 1);
  }
  ck_assert_uint_eq(job[0].job_id, job[1].job_id);
  /* every rank sees every rank's REGISTER address */
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) {
      const void *a;
      size_t n;
      ck_assert_int_eq(yk_daemon_ctl_peer_addr(r[i].ctl, j, &a, &n), 0);
      char want[32];
      snprintf(want, sizeof want, "fabric-addr-of-%d", j);
      ck_assert_uint_eq(n, strlen(want));
      ck_assert_int_eq(memcmp(a, want, n), 0);
    }
  const void *a;
  size_t n;
  ck_assert_int_eq(yk_daemon_ctl_peer_addr(r[0].ctl, 2, &a, &n), YK_EINVAL);

  /* two all-gather rounds, concurrently from both ranks */
  for (int round = 0; round < 2; round++) {
    gather_t g[2] = {{&r[0], {0}, -1}, {&r[1], {0}, -1}};
    for (int i = 0; i < 2; i++) uv_thread_create(&th[i], gather, &g[i]);
    for (int i = 0; i < 2; i++) uv_thread_join(&th[i]);
    for (int i = 0; i < 2; i++) {
      ck_assert_int_eq(g[i].rc, 0);
      ck_assert_uint_eq(g[i].out[0], 1000);
      ck_assert_uint_eq(g[i].out[1], 1001);
    }
  }

  /* reports travel with heartbeats; nothing to poll yet */
  yk_step_stats rep = {.step = 42, .loss = 2.5, .tokens_per_s = 1000, .step_ms = 10, .loss_scale = 1024};
  yk_daemon_ctl_report(r[1].ctl, &rep);
  yk_daemon_event ev;
  ck_assert_int_eq(yk_daemon_ctl_poll(r[0].ctl, &ev), 0);
  yk_sleep_ms(300);
  ck_assert_int_lt(yk_daemon_ctl_heartbeat_age_ms(r[0].ctl), 1000);

  /* rank 1 fails: rank 0 is told (poll) and its abort hook runs */
  yk_daemon_ctl_stop(r[1].ctl, 7, "disk full");
  ck_assert_int_eq(yk_daemon_ctl_wait(r[0].ctl, &ev, yk_deadline_in_ms(3000)), 1);
  ck_assert_int_eq(ev.type, YK_EV_SHUTDOWN);
  ck_assert_int_eq(ev.code, 7);
  ck_assert_msg(strstr(ev.text, "rank 1 (host host1) failed with code 7: disk full"), "%s", ev.text);
  for (int i = 0; i < 100 && !atomic_load(&r[0].aborted); i++) yk_sleep_ms(10);
  ck_assert_int_eq(atomic_load(&r[0].aborted), 1);
  ck_assert_int_eq(r[0].abort_code, 7);
  /* an all-gather after the abort fails at once instead of hanging */
  uint64_t x = 1, all[2];
  ck_assert_int_eq(yk_daemon_ctl_allgather(r[0].ctl, &x, sizeof x, all, yk_deadline_in_ms(5000), NULL), YK_EABORTED);
  yk_daemon_ctl_stop(r[0].ctl, 7, "peer failed");
  int code = 0;
  /* rank 0's BYE is flushed, but the coordinator's loop thread may not have
   * read it yet: give it up to 2 s. */
  for (int i = 0; i < 200 && yk_coord_finished(ct.co, &code) != 1; i++) yk_sleep_ms(10);
  ck_assert_int_eq(yk_coord_finished(ct.co, &code), 1);
  ck_assert_int_eq(code, 7);
  uv_async_send(&ct.stop);
  uv_thread_join(&cth);
  ck_assert_int_eq(uv_loop_close(&ct.loop), 0);
}
END_TEST

START_TEST(no_coordinator) {
  /* nobody listens: start gives up at the rendezvous deadline with a clear error */
  setenv("YOKE_SECRET", SECRET, 1);
  rank_t r;
  memset(&r, 0, sizeof r);
  r.rank = 1;
  r.port = 1; /* nothing listens on port 1 */
  uint64_t t0 = yk_now_ns();
  yk_config_defaults(&r.cfg);
  yk_launch_env env = {0};
  env.kind = YK_LAUNCH_YOKE;
  env.rank = 1;
  env.world = 2;
  strcpy(env.host, "h");
  strcpy(env.coord_host, "127.0.0.1");
  env.coord_port = 1;
  yk_logger lg;
  yk_logger_init(&lg, 1, YK_LOG_INFO, stderr);
  yk_daemon_ctl_opts o = {.cfg = &r.cfg, .env = &env, .log = &lg, .rendezvous_timeout_ms = 1000};
  yk_daemon_ctl *ctl = NULL;
  yk_diag d = {0};
  int rc = yk_daemon_ctl_start(&o, &ctl, &d);
  double s = (double)(yk_now_ns() - t0) / 1e9;
  ck_assert_int_eq(rc, YK_ETIMEDOUT);
  ck_assert_ptr_null(ctl);
  ck_assert_msg(strstr(d.msg, "cannot reach the coordinator at 127.0.0.1:1"), "%s", d.msg);
  ck_assert_msg(s < 3.0, "took %.1f s", s);
  ck_assert_int_eq(yk_daemon_exit_code(rc), YK_EXIT_RENDEZVOUS);
}
END_TEST

int main(void) {
  Suite *s = suite_create("ctl");
  TCase *t = tcase_create("all");
  tcase_set_timeout(t, 60);
  tcase_add_test(t, two_ranks);
  tcase_add_test(t, no_coordinator);
  suite_add_tcase(s, t);
  SRunner *r = srunner_create(s);
  srunner_run_all(r, CK_NORMAL);
  int failed = srunner_ntests_failed(r);
  srunner_free(r);
  return failed ? 1 : 0;
}
