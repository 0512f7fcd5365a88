#!/usr/bin/env bash
# The yoke CLI: subcommands, --help, clear errors for unknown input, and the
# committed config reference staying in step with the key table.
set -u
. "$(dirname "$0")/../lib.sh"

expect_ok "version" "$YOKE" version
expect_fail 2 "unknown command" "$YOKE" frobnicate
expect_stderr "unknown command 'frobnicate'" "$YOKE" frobnicate
# A mistyped command names the one it most likely meant, at every level.
expect_fail 2 "mistyped command" "$YOKE" trian
expect_stderr "unknown command 'trian' (did you mean train?)" "$YOKE" trian
expect_stderr "unknown action 'lss' (did you mean ls?)" "$YOKE" ckpt lss
expect_stderr "unknown benchmark 'scal' (did you mean scale?)" "$YOKE" bench scal
expect_stderr "unknown action 'prep' (did you mean prepare?)" "$YOKE" data prep
err=$("$YOKE" frobnicate 2>&1)
case "$err" in *"did you mean"*) fail "no suggestion for an unrelated word: $err" ;; *) pass "no suggestion for frobnicate" ;; esac
expect_ok "help" "$YOKE" --help
expect_fail 2 "no command" "$YOKE"
expect_stderr "unknown option '--bogus'" "$YOKE" version --bogus
expect_stderr "unexpected argument 'x'" "$YOKE" version x
expect_ok "config --help" "$YOKE" config --help

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$YOKE" config reference > "$tmp/ref.yaml"
if ! diff -u "$YK_SOURCE_DIR/cluster-configs/reference.yaml" "$tmp/ref.yaml" > "$tmp/diff"; then
  fail "cluster-configs/reference.yaml is stale; regenerate with: yoke config reference > cluster-configs/reference.yaml"
  cat "$tmp/diff"
fi
# The reference itself must load as a config.
expect_ok "reference loads" "$YOKE" config show "$tmp/ref.yaml"
printf 'train:\n  stepz: 3\n' > "$tmp/bad.yaml"
expect_stderr "bad.yaml:2: unknown key 'train.stepz' (did you mean 'train.steps'?)" "$YOKE" config show "$tmp/bad.yaml"
expect_stderr "key 'train.steps' has value 'x'" "$YOKE" config show --set train.steps=x
# Floats as a person writes them: the shortest form that reads back the same.
out=$("$YOKE" config reference)
case "$out" in *"lr: 0.0003"$'\n'*) pass "reference prints lr: 0.0003" ;; *) fail "reference lr: $(grep ' lr:' <<< "$out")" ;; esac
out=$("$YOKE" config show --set optim.lr=1e-4 --set optim.beta2=0.95)
case "$out" in *"lr: 0.0001"$'\n'*"beta2: 0.95"$'\n'*) pass "show prints 0.0001 and 0.95" ;; *) fail "show floats: $(grep -E ' (lr|beta2):' <<< "$out")" ;; esac
expect_ok "config reference --help" "$YOKE" config reference --help
out=$("$YOKE" config show --set optim.lr=0.01)
case "$out" in *"lr: 0.01"*) pass "override applied" ;; *) fail "override not applied: $out" ;; esac
finish
