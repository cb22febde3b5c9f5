# bench/lib.sh: what the benchmarks share; sourced, not run (bench/run runs
# only the executable files here).  A benchmark sets fail=0 before using
# verdict.

say() { printf '%s\n' "$*"; }

# now_us: microseconds since the epoch, from bash itself (no fork).
now_us() { local t=${EPOCHREALTIME/./}; printf '%s' "$t"; }

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# calc EXPR: floating-point arithmetic and comparisons (1 or 0), with awk.
calc() { awk "BEGIN { x = $1; if (x == int(x)) print x; else printf \"%.2f\\n\", x }"; }
ms() { calc "$1 / 1000"; }

# verdict TEXT CONDITION: print whether a target is met; remember a miss.
verdict() {
	if [ "$(calc "($2) ? 1 : 0")" = 1 ]; then
		say "               target $1: met"
	else
		say "               target $1: MISSED"
		fail=1
	fi
}
