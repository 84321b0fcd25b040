#!/usr/bin/env bash
# Regenerates reports/ggdm-subspace and reports/ggdm-sphere (core issue: GGDM simulations).
# Each line is one `bench run`; records append to the report directory, then `bench report` rebuilds it.
set -euo pipefail
S=reports/ggdm-subspace; P=reports/ggdm-sphere
run() { bench run --threads 1 "$@"; }
# Oracle, f1-theta2, delta = 0.2, 1000 rounds: fixed point of Algorithm 1 (ggdm.md §7.2)
run --task subspace --reward f1-theta2 --denoiser oracle --method look-ahead --param delta=0.2 --rounds 1000 --batch 32 --seed 0 --out $S
run --task subspace --reward f1-theta2 --denoiser oracle --method naive --param delta=0.2 --rounds 1000 --batch 32 --seed 0 --out $S
# Trained network: naive vs look-ahead, delta in {0.2, 0.9} (paper Fig. 4), Algorithm 1 and 2
for d in 0.2 0.9; do for m in naive look-ahead; do
  run --task subspace --reward f1-theta2 --denoiser trained --method $m --param delta=$d --rounds 500 --batch 32 --seed 0 --out $S
done; done
run --task subspace --reward f1-theta2 --denoiser trained --method naive --param delta=0.9 --rounds 500 --batch 32 --seed 0 --algorithm 2 --ft-lr 1e-6 --ft-start 40 --out $S
run --task subspace --reward f1-theta2 --denoiser trained --method look-ahead --param delta=0.2 --rounds 500 --batch 32 --seed 0 --algorithm 2 --ft-lr 1e-6 --ft-start 60 --out $S
bench report $S --figure ggdm-curves --figure ggdm-fixed-point
# Sphere: delta sweep, 25 rounds, B = 256 (paper Fig. 11 right)
for den in oracle trained; do for m in naive look-ahead; do for d in 0.02 0.12 0.22 0.32 0.42 0.52; do
  run --task sphere --reward linear --denoiser $den --method $m --param delta=$d --rounds 25 --batch 256 --seed 1 --out $P
done; done; done
bench report $P --figure ggdm-pareto --figure ggdm-curves
# Network quality: unguided samples of the trained network next to the exact oracle (B = 512)
N=reports/networks
for t in subspace sphere; do for den in oracle trained; do
  run --task $t --denoiser $den --method unguided --rounds 0 --batch 512 --seed 0 --out $N
done; done
bench report $N
