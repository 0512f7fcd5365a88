#include "yk_partition.h"

#include <check.h>
#include <string.h>

START_TEST(test_even_ranges_cover_exactly_once) {
  for (uint64_t total = 0; total < 40; total++)
    for (int world = 1; world <= 9; world++) {
      uint64_t next = 0;
      for (int r = 0; r < world; r++) {
        uint64_t off, len;
        yk_partition_even_range(total, world, r, &off, &len);
        ck_assert_uint_eq(off, next);
        ck_assert(len == total / world || len == total / world + 1);
        for (uint64_t i = off; i < off + len; i++) ck_assert_int_eq(yk_partition_owner(total, world, i), r);
        next = off + len;
      }
      ck_assert_uint_eq(next, total);
    }
}
END_TEST


START_TEST(test_data_windows_count) {
  ck_assert_uint_eq(yk_partition_data_windows(0, 6), 0);
  ck_assert_uint_eq(yk_partition_data_windows(6, 6), 0);  /* needs w + 1 tokens */
  ck_assert_uint_eq(yk_partition_data_windows(7, 6), 1);
  ck_assert_uint_eq(yk_partition_data_windows(12, 6), 1);
  ck_assert_uint_eq(yk_partition_data_windows(13, 6), 2);
  ck_assert_uint_eq(yk_partition_data_windows(100, 0), 0);
  /* every window fits: last window's last token index < ntok */
  for (uint64_t n = 0; n < 200; n++)
    for (uint64_t w = 1; w < 20; w++) {
      uint64_t k = yk_partition_data_windows(n, w);
      if (k) ck_assert_uint_lt((k - 1) * w + w, n);      /* last window's last target */
      if (n >= (k + 1) * w + 1) ck_abort_msg("window %llu would fit too", (unsigned long long)k);
    }
}
END_TEST

/* The windows one step reads: the same set for every split of world*accum,
 * disjoint across ranks and micro-batches, and consecutive steps tile the
 * sequence without gaps. */
START_TEST(test_data_window_splits) {
  for (int G = 1; G <= 12; G++) {
    for (int world = 1; world <= G; world++) {
      if (G % world) continue;
      int accum = G / world;
      ck_assert_uint_eq(yk_partition_data_step_windows(world, accum), (uint64_t)G);
      for (uint64_t step = 0; step < 5; step++) {
        uint64_t first = step * (uint64_t)G;
        unsigned char seen[16] = {0};
        for (int r = 0; r < world; r++)
          for (int m = 0; m < accum; m++) {
            uint64_t q = yk_partition_data_window(first, world, accum, r, m);
            ck_assert_uint_ge(q, first);
            ck_assert_uint_lt(q, first + (uint64_t)G);
            ck_assert_msg(!seen[q - first], "G=%d world=%d accum=%d: window %llu read twice", G, world, accum,
                          (unsigned long long)q);
            seen[q - first] = 1;
          }
      }
      /* micro-batch m of all ranks is one contiguous run (llm.c order) */
      for (int m = 0; m < accum; m++)
        for (int r = 1; r < world; r++)
          ck_assert_uint_eq(yk_partition_data_window(40, world, accum, r, m),
                            yk_partition_data_window(40, world, accum, r - 1, m) + 1);
    }
  }
}
END_TEST

/* Megatron order: TP fastest, then DP, then PP; every rank has one place,
 * the groups partition the ranks, and impossible layouts name the values. */
START_TEST(test_layout_grid) {
  yk_diag d = {0};
  for (int world = 1; world <= 24; world++)
    for (int tp = 1; tp <= world; tp++)
      for (int pp = 1; pp <= world; pp++) {
        yk_layout l;
        if (world % (tp * pp)) {
          ck_assert_int_eq(yk_partition_layout(world, tp, pp, 0, &l, &d), YK_ECONFIG);
          continue;
        }
        int seen[24] = {0};
        for (int r = 0; r < world; r++) {
          ck_assert_int_eq(yk_partition_layout(world, tp, pp, r, &l, &d), 0);
          ck_assert_int_eq(l.dp * l.tp * l.pp, world);
          ck_assert_int_eq(yk_partition_layout_rank(&l, l.dp_rank, l.tp_rank, l.pp_rank), r);
          ck_assert_int_eq(l.tp_rank, r % tp); /* TP fastest */
          seen[yk_partition_layout_rank(&l, l.dp_rank, l.tp_rank, l.pp_rank)]++;
          /* each group: the members share the colour, keys are 0..size-1 */
          for (int g = 0; g < 3; g++) {
            int c, k, size = g == YK_GROUP_DP ? l.dp : g == YK_GROUP_TP ? l.tp : l.pp, members = 0;
            yk_partition_layout_group(&l, (yk_group)g, &c, &k);
            ck_assert_int_lt(k, size);
            for (int q = 0; q < world; q++) {
              yk_layout o;
              int c2, k2;
              yk_partition_layout(world, tp, pp, q, &o, &d);
              yk_partition_layout_group(&o, (yk_group)g, &c2, &k2);
              if (c2 == c) members++;
            }
            ck_assert_int_eq(members, size);
          }
        }
        for (int r = 0; r < world; r++) ck_assert_int_eq(seen[r], 1);
      }
  yk_layout l;
  ck_assert_int_eq(yk_partition_layout(4, 2, 1, 3, &l, &d), 0);
  char buf[128];
  yk_partition_layout_describe(&l, buf, sizeof buf);
  ck_assert_str_eq(buf, "4 ranks = dp 2 x tp 2 x pp 1; rank 3 = (dp 1, tp 1)");
  ck_assert_int_eq(yk_partition_layout(6, 4, 1, 0, &l, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "6 ranks") && strstr(d.msg, "parallel.tensor=4") &&
                strstr(d.msg, "parallel.tensor can be 1, 2, 3, 6"), "%s", d.msg);
  ck_assert_int_eq(yk_partition_layout(6, 3, 4, 0, &l, &d), YK_ECONFIG); /* 6 % 4: keep tensor 3, pipeline 1 or 2 */
  ck_assert_msg(strstr(d.msg, "with parallel.tensor=3, parallel.pipeline can be 1, 2"), "%s", d.msg);
  ck_assert_int_eq(yk_partition_layout(4, 0, 1, 0, &l, &d), YK_ECONFIG);
  ck_assert_msg(strstr(d.msg, "parallel.tensor=0"), "%s", d.msg);
}
END_TEST

int main(void) {
  Suite *s = suite_create("partition");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_even_ranges_cover_exactly_once);
  tcase_add_test(tc, test_data_windows_count);
  tcase_add_test(tc, test_data_window_splits);
  tcase_add_test(tc, test_layout_grid);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
