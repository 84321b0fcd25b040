#!/usr/bin/env bash
# Regenerates reports/ggdm-subspace, reports/ggdm-sphere and reports/networks (core issue: GGDM simulations;
# issue 12: over network seeds 0, 1, 2 of the validated default networks, oracle beside).
# Each line is one `bench run`; records append to the report directory, then `bench report` rebuilds it.
# Parts can run in separate processes: `reports/ggdm.sh subspace-oracle-1000|subspace|sphere|networks|report`
# (default: all, in order). Old records are not removed here: start from empty report directories.
set -euo pipefail
S=reports/ggdm-subspace; P=reports/ggdm-sphere; N=reports/networks
run() { bench run --threads 1 "$@"; }
subspace_oracle_1000() {  # oracle, delta = 0.2, 1000 rounds: fixed point of Algorithm 1 (ggdm.md §7.2)
  for m in look-ahead naive; do
    run --task subspace --reward f1-theta2 --denoiser oracle --method $m --param delta=0.2 --rounds 1000 --batch 32 --seed 0 --out $S
  done
}
subspace() {  # f1-theta2, delta in {0.2, 0.9} (paper Fig. 4), Algorithm 1, 200 rounds (flat from ~100 rounds)
  for d in 0.2 0.9; do for m in naive look-ahead; do
    [ $d = 0.9 ] && run --task subspace --reward f1-theta2 --denoiser oracle --method $m --param delta=$d --rounds 200 --batch 32 --seed 0 --out $S
    for ns in 0 1 2; do
      run --task subspace --reward f1-theta2 --denoiser trained --network-seed $ns --method $m --param delta=$d --rounds 200 --batch 32 --seed 0 --out $S
    done
  done; done
}
sphere() {  # linear reward, delta sweep, 25 rounds, B = 256 (paper Fig. 11 right): oracle and network seeds 0, 1, 2,
  # batched by `bench suite` (bench/suites/ggdm-sphere.toml lists the runs; same specs as one `bench run` each)
  bench suite ggdm-sphere --threads 1 --out $P
}
networks() {  # unguided samples of each trained network next to the exact oracle (B = 512)
  for t in subspace sphere; do
    run --task $t --denoiser oracle --method unguided --rounds 0 --batch 512 --seed 0 --out $N
    for ns in 0 1 2; do run --task $t --denoiser trained --network-seed $ns --method unguided --rounds 0 --batch 512 --seed 0 --out $N; done
  done
}
report() {
  bench report $S --figure ggdm-curves --figure ggdm-fixed-point
  bench report $P --figure ggdm-pareto --figure ggdm-curves  # (bench suite ggdm-sphere writes it too)
  bench report $N
}
case "${1:-all}" in
  subspace-oracle-1000) subspace_oracle_1000 ;; subspace) subspace ;; sphere) sphere ;; networks) networks ;;
  report) report ;;
  all) subspace_oracle_1000; subspace; sphere; networks; report ;;
  *) echo "usage: reports/ggdm.sh [subspace-oracle-1000|subspace|sphere|networks|report|all]" >&2; exit 2 ;;
esac
