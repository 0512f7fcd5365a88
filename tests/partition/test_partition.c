#include "yk_partition.h"

#include <check.h>

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

int main(void) {
  Suite *s = suite_create("partition");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_even_ranges_cover_exactly_once);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
