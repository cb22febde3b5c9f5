#!/usr/bin/env bats
# make install and make uninstall put and take away exactly the tools, their
# man pages and completions, under DESTDIR and PREFIX.

load helpers

@test "make install puts tools, man pages and completions in place; uninstall removes them" {
	cd "$VS_TOP"
	d=$T/root
	run make -s install DESTDIR="$d" PREFIX=/usr BUILD="${VS_BUILD:-$VS_TOP/build}"
	assert_success
	for t in $(ls man/*.1 | xargs -n1 basename | sed 's/\.1$//'); do
		[ -x "$d/usr/bin/$t" ] || fail "$t not installed"
		[ -f "$d/usr/share/man/man1/$t.1" ] || fail "$t.1 not installed"
		[ -f "$d/usr/share/bash-completion/completions/$t" ] || fail "$t completion not installed"
	done
	[ -f "$d/usr/share/man/man7/vmstrap.7" ]
	[ -f "$d/usr/share/zsh/site-functions/_vmstrap" ]
	run "$d/usr/bin/cowclone" -V
	assert_success
	run make -s uninstall DESTDIR="$d" PREFIX=/usr
	assert_success
	run find "$d" -type f
	assert_output ""
}
