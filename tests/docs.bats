#!/usr/bin/env bats
# The documentation is part of the interface: man pages lint clean, options,
# completions and the pipeline document's keys stay in step with the code.

load helpers

setup() {
	cd "$VS_TOP"
	tools=$(ls "$VS_BIN")
}

# options_of_help TOOL: the options that TOOL -h lists, one per line, sorted.
options_of_help() {
	"$1" -h | grep -oE -- '(^|[ ,])--?[a-zA-Z][a-z-]*' | tr -d ' ,' | sort -u
}

@test "man pages lint clean with mandoc" {
	run bash -c 'mandoc -Tlint -Wwarning man/*.[1-9] 2>&1 | grep -v "mandoc.db"'
	[ -z "$output" ] || fail "$output"
}

@test "every tool has a man page, a bash completion and a zsh completion" {
	[ -n "$tools" ]
	for t in $tools; do
		[ -f "man/$t.1" ] || fail "man/$t.1 missing"
		[ -f "completions/bash/$t" ] || fail "completions/bash/$t missing"
		head -1 completions/zsh/_vmstrap | grep -qw "$t" ||
			fail "$t missing from _vmstrap's #compdef"
	done
}

@test "man pages have the usual sections, in the usual order" {
	order="NAME|SYNOPSIS|DESCRIPTION|ENVIRONMENT|FILES|EXIT STATUS|EXAMPLES|SEE ALSO|SECURITY|"
	for t in $tools; do
		got=$(grep '^\.Sh ' "man/$t.1" | cut -c5- | tr '\n' '|')
		# FILES is the one that may be left out.
		[ "$got" = "$order" ] || [ "$got" = "${order/FILES|/}" ] ||
			fail "$t.1 sections: $got"
	done
	grep -q '^\.Sh EXIT STATUS' man/vmstrap.7
}

@test "options in -h, the man page and both completions agree" {
	for t in $tools; do
		help=$(options_of_help "$t")
		[ -n "$help" ]
		man=$( (grep -oE '^\.It Fl [a-zA-Z]( |$)' "man/$t.1" | sed 's/ *$//; s/.* /-/'
			grep -oE 'Fl Fl [a-z-]+' "man/$t.1" | sed 's/Fl Fl /--/') | sort -u)
		bash=$(sed -n "/compgen -W '-/,/' -- /p" "completions/bash/$t" |
			sed "s/.*compgen -W '//; s/' -- .*//" | grep -oE -- "(^|[[:space:]'])--?[a-zA-Z][a-z-]*" | tr -d " '\t" | sort -u)
		zfn=$(sed -n "/^_vmstrap_$t()/,/^}/p" completions/zsh/_vmstrap)
		zsh=$( (grep -oE -- '\{-[a-zA-Z]\+?,--[a-z-]+=?\}' <<< "$zfn" | tr -d '{}+=' | tr ',' '\n'
			grep -oE -- "'--[a-z-]+=?\[" <<< "$zfn" | tr -d "'[=") | sort -u)
		[ "$help" = "$man" ] || fail "$t: -h ($help) vs man ($man)"
		[ "$help" = "$bash" ] || fail "$t: -h ($help) vs bash ($bash)"
		[ "$help" = "$zsh" ] || fail "$t: -h ($help) vs zsh ($zsh)"
	done
}

@test "the bash completion completes options and sizes" {
	[ -f /usr/share/bash-completion/bash_completion ] ||
		fail "bash-completion is not installed (scripts/install-deps installs it)"
	run bash -c '
		source /usr/share/bash-completion/bash_completion
		source completions/bash/cowclone
		COMP_WORDS=(cowclone --fo); COMP_CWORD=1; COMP_LINE="cowclone --fo"
		COMP_POINT=${#COMP_LINE}; _cowclone; echo "${COMPREPLY[*]}"
		COMP_WORDS=(cowclone -s 1); COMP_CWORD=2; COMP_LINE="cowclone -s 1"
		COMP_POINT=${#COMP_LINE}; _cowclone; echo "${COMPREPLY[*]}"'
	assert_success
	assert_line --index 0 "--force"
	assert_line --index 1 "10G 15G 100G"
}

@test "the bash completion of oci-unpack offers the layout's references" {
	umoci init --layout "$T/L" && umoci new --image "$T/L:alpha" && umoci new --image "$T/L:beta"
	run bash -c '
		source /usr/share/bash-completion/bash_completion
		source completions/bash/oci-unpack
		COMP_WORDS=(oci-unpack -o x "$1" ""); COMP_CWORD=4; COMP_LINE="oci-unpack -o x $1 "
		COMP_POINT=${#COMP_LINE}; _oci_unpack; echo "${COMPREPLY[*]}"
		COMP_WORDS=(oci-unpack "$1" b); COMP_CWORD=2; COMP_LINE="oci-unpack $1 b"
		COMP_POINT=${#COMP_LINE}; _oci_unpack; echo "${COMPREPLY[*]}"' _ "$T/L"
	assert_success
	assert_line --index 0 "alpha beta"
	assert_line --index 1 "beta"
}

@test "the zsh completion loads and is bound to every tool" {
	command -v zsh >/dev/null || fail "zsh is not installed (scripts/install-deps installs it)"
	zsh -n completions/zsh/_vmstrap
	for t in $tools; do
		run zsh -fc "fpath=($VS_TOP/completions/zsh \$fpath); autoload -U compinit
			compinit -u -d $T/zcompdump; print -r -- \${_comps[$t]}"
		assert_success
		assert_output "_vmstrap"
	done
}

@test "the disk section's keys are the ones vmstrap(7) and cowclone(1) document" {
	truncate -s 1M "$T/src.img"
	run_split cowclone "$T/src.img" "$T/disk.img"
	assert_success
	run_split cowclone --keep "$T/old.img" "$T/src.img" "$T/disk.img"
	assert_success
	# (and a live clone's: tests/cowclone.bats checks those against the page)
	code=$( (jqo '.disk | keys_unsorted | .[]'; printf '%s\n' vm vm_state paused_ms) )
	seven=$(awk '/^\.Ss disk$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' man/vmstrap.7)
	one=$(awk '/^\.It Li / {print $3}' man/cowclone.1)
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; cowclone.1: $one"
}

@test "every exit status a man page lists is in the shared table" {
	table=$(grep -oE '^ \* +[0-9]+ ' common/status.h | tr -d ' *' | sort -n | tr '\n' ' ')
	seven=$(awk '/^\.Sh EXIT STATUS/ {f=1; next} f && /^\.Sh / {f=0} f && /^\.It [0-9]/ {print $2}' man/vmstrap.7 | sort -n | tr '\n' ' ')
	[ "$table" = "$seven" ] || fail "status.h: $table; vmstrap.7: $seven"
	for t in $tools; do
		# (imgcheck's filesystem states are e2fsck's bits, as status.h says)
		allowed=" $table "
		[ "$t" = imgcheck ] && allowed="$allowed 1 4 "
		for s in $(awk '/^\.Sh EXIT STATUS/ {f=1; next} f && /^\.Sh / {f=0} f && /^\.It [0-9]/ {print $2}' "man/$t.1"); do
			[[ $allowed == *" $s "* ]] || fail "$t.1 lists $s, which status.h does not"
		done
	done
}

@test "README gives the two commands" {
	grep -q '^ *make demo' README.md
	grep -q '^ *make check' README.md
	grep -qx 'make check' .ci/run || grep -q '^exec make check$' .ci/run
}
