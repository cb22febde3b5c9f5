#!/usr/bin/env bats
# vmstrap, the script, where no VM is needed: what a user types (options
# before or after the command, each command's --help), the one name rule
# before any name becomes a path, and the configuration checked before
# anything is written.  The whole flow with VMs is tests/pipeline.bats.

load helpers

setup() {
	mkdir -p "$T/ws"
	cd "$T/ws"
}

teardown() {
	cd "$T"
	unmount_all
}

# ws_list: what the workspace holds (bats's own files aside).
ws_list() {
	ls -A | grep -v "^separate-stderr-" | tr '\n' ' '
}

# cfg [GROUP-LINES...]: slicer-mac.yaml with one group (line 4 on), of
# these lines (default: web, 5G).
cfg() {
	[ $# -gt 0 ] || set -- "name: web" "storage_size: 5G"
	{
		printf 'config:\n  image: "127.0.0.1:9/none:1"\n  host_groups:\n    - %s\n' "$1"
		shift
		printf '      %s\n' "$@"
	} > slicer-mac.yaml
}

@test "reset, down and launch refuse names that are not names: nothing outside the workspace is touched" {
	mkdir -p "$T/outside/somedir" run/web-1 run/web-2
	touch "$T/outside/important.img" "$T/outside/somedir/keep" "$T/x-base.img" web-1.img
	cfg
	before=$(cd "$T" && find . | grep -v separate-stderr- | sort)
	for name in ../outside/important ../../somedir ../outside/somedir '' . .. /abs/x "$T/x" -rf 'a b' '*' 'web-1;x' "$(printf 'a\nb')"; do
		run_split vmstrap reset --disk "$name"
		assert_refused 64 "invalid VM name"
		assert_one_line
		run_split vmstrap reset --base "$name"
		assert_refused 64 "invalid group name"
		run_split vmstrap down -- "$name"
		assert_refused 64 "invalid VM name"
		run_split vmstrap launch -- "$name"
		assert_refused 64 "invalid group name"
	done
	run_split vmstrap reset --base "$T/x"
	assert_refused 64 "invalid group name '/"
	[ "$(cd "$T" && find . | grep -v separate-stderr- | sort)" = "$before" ] || fail "something was removed"
	# a name that is one still works
	run_split vmstrap -q reset --disk web-1
	assert_ok
	[ ! -e web-1.img ] && [ ! -e run/web-1 ] && [ -d run/web-2 ]
}

@test "vmrun check-name: the tools' one name rule, for scripts" {
	run_split vmrun check-name web-1 db.2 a_b A9
	assert_ok
	[ -z "$output" ]
	for name in '' . .. ../x a/b -x .hidden 'a b' "$(head -c 201 /dev/zero | tr '\0' a)"; do
		run_split vmrun check-name -- ok "$name"
		assert_refused 64 "invalid name"
	done
	run_split vmrun check-name -- "$(head -c 200 /dev/zero | tr '\0' a)"
	assert_ok
	run_split vmrun check-name
	assert_refused 64 "check-name needs a NAME"
}

@test "group names from the configuration follow the name rule: 78 with where, nothing written" {
	for name in '"a b"' '"*"' '"../x"' '"a/b"' '".hidden"' '"-x"' "\"$(printf 'a\\\\nb')\""; do
		cfg "name: $name" "storage_size: 5G"
		run_split vmrun config
		assert_refused 78 "slicer-mac.yaml:4:[0-9]+: host group name: invalid group name"
		run_split vmstrap up
		assert_refused 78 "slicer-mac.yaml:4:[0-9]+: host group name"
		[ "$(ws_list)" = "slicer-mac.yaml " ] || fail "left: $(ws_list)"
	done
}

@test "the global options go before or after the command; each command has its --help" {
	mkdir other
	touch other/web-1.img
	run_split vmstrap reset --disk web-1 -C other
	assert_ok
	[ ! -e other/web-1.img ]
	run_split vmstrap reset -q --disk web-1 --directory=other
	assert_ok
	[ -z "$stderr" ]
	run_split vmstrap up -c none.yaml
	assert_refused 66 "none.yaml"
	run_split vmstrap up --config none.yaml -q
	assert_refused 66 "none.yaml"
	run_split vmstrap ls -C other
	assert_ok
	run_split vmstrap ls -C
	assert_refused 64 "option -C needs a value"
	for c in up launch down ls df reset snapshot reclaim prune ssh; do
		run_split vmstrap "$c" --help
		assert_ok
		[[ $output == "usage: vmstrap "*" $c"* ]] || fail "$c --help: $output"
		run_split vmstrap -h "$c"
		assert_ok
		[[ $output == "usage: vmstrap "*" $c"* ]]
	done
	run_split vmstrap --help
	assert_ok
	[[ $output == *"before or after the command"* ]]
	run_split vmstrap up -x
	assert_refused 64 "unknown option '-x'"
	[[ $stderr == *"usage: vmstrap [-q] [-C DIR] [-c FILE] up"* ]]
	run_split vmstrap frob --help
	assert_refused 64 "unknown command 'frob'"
	run_split vmstrap reset --frob
	assert_refused 64 "reset: unknown '--frob'"
	[ "$(ws_list)" = "other " ]
}

@test "Slicer's keys: honoured, or warned about, never dropped silently" {
	key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOUlSESAf6up+AioSZ87A/w+IQxlDwx+mqLo3nor/dge me@h"
	cat > slicer-mac.yaml <<-EOF
	config:
	  image: "127.0.0.1:9/none:1"
	  github_user: alexellis
	  ssh_keys: ["$key"]
	  host_groups:
	    - name: web
	      storage: image
	      storage_size: 5G
	      ram_mb: 768
	      userdata: "echo hi"
	    - name: db
	      storage: devmapper
	      storage_size: 6G
	      ram_bytes: 536870912
	      userdata_file: ./ud.sh
	    - name: zz
	      storage: zfs
	      storage_size: 7G
	EOF
	run_split vmrun config
	assert_ok
	[ "$(jq -r '.host_groups[0].ram' <<< "$output")" = $((768 << 20)) ]
	[ "$(jq -r '.host_groups[1].ram' <<< "$output")" = 536870912 ]
	[ "$(jq -r .github_user <<< "$output")" = alexellis ]
	[ "$(jq -r '.ssh_keys[0]' <<< "$output")" = "$key" ]
	[ "$(jq -r '.host_groups[0].userdata' <<< "$output")" = "echo hi" ]
	[ "$(jq -r '.host_groups[1].userdata_file' <<< "$output")" = "$(pwd -P)/ud.sh" ]
	[[ $stderr == *"slicer-mac.yaml:12:16: storage: devmapper: vmstrap keeps every disk in an image file"* ]]
	[[ $stderr == *"storage: zfs: vmstrap keeps every disk in an image file"* ]]
	[[ $stderr != *"yaml:7:"* ]] || fail "storage: image is warned about"
	[[ $stderr != *"not honoured"* ]] || fail "$stderr"
	[ "$(grep -c . <<< "$stderr")" -eq 2 ]
	# -q: checked, quietly
	run_split vmrun -q config
	assert_ok
	[ -z "$stderr" ]
	# a bad key, a bad GitHub login: refused by the check, where they are
	sed -i 's/AAAAC3Nza/AAAAB3Nza/' slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:4:14: ssh_keys: the key's data does not hold a ssh-ed25519 key"
	sed -i 's/AAAAB3Nza/AAAAC3Nza/; s/alexellis/"..\/x"/' slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:3:16: github_user: '../x' is not a GitHub login"
}

@test "the configuration: what it refuses before anything is written" {
	# a group without storage_size: vmstrap uses image storage, which
	# needs it
	cfg "name: web" "vcpu: 2"
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:4:7: host group 'web' has no storage_size: give its disk size, like storage_size: 15G"
	run_split vmstrap up
	assert_refused 78 "has no storage_size"
	[ "$(ws_list)" = "slicer-mac.yaml " ] || fail "left: $(ws_list)"
	# YAML types: a quoted number is a string
	cfg "name: web" 'count: "3"' "storage_size: 5G"
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:5:14: count: expected a whole number, got the string \"3\""
	cfg "name: web" "count: '3'" "storage_size: 5G"
	run_split vmrun config
	assert_refused 78 "count: expected a whole number"
	cfg "name: web" "count: 3" "storage_size: 5G"
	run_split vmrun config
	assert_ok
	cfg "name: web" "storage: nfs" "storage_size: 5G"
	run_split vmrun config
	assert_refused 78 "storage: expected image, devmapper or zfs, got 'nfs'"
	printf 'config:\n  insecure_registry: "true"\n' > slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "insecure_registry: expected true or false, got the string"
	printf 'config:\n  kernel_file: k\n  kernel_image: r:1\n' > slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "kernel_image .* or kernel_file .*, not both"
	printf 'config:\n  initrd_file: i\n' > slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "initrd_file goes with kernel_file"
	# a directory is not a configuration
	mkdir d.yaml
	run_split vmrun -c d.yaml config
	assert_refused 66 "d.yaml: is a directory"
	run_split vmstrap -c d.yaml up
	assert_refused 66 "d.yaml: is a directory"
	[ "$(ws_list)" = "d.yaml slicer-mac.yaml " ] || fail "left: $(ws_list)"
}

@test "kernel_file and initrd_file: relative to the configuration's directory" {
	mkdir -p conf
	printf 'config:\n  kernel_file: k/vmlinuz\n  initrd_file: /boot/x.img\n' > conf/c.yaml
	run_split vmrun -c conf/c.yaml config
	assert_ok
	[ "$(jqo .kernel_file)" = "$T/ws/conf/k/vmlinuz" ]
	[ "$(jqo .initrd_file)" = /boot/x.img ]
	run_split vmrun -C conf -c c.yaml config
	assert_ok
	[ "$(jqo .kernel_file)" = "$T/ws/conf/k/vmlinuz" ]
}

@test "space: df shows the cache and what each image frees; reclaim trims and dedupes, before and after; prune is oci-prune" {
	mount_loop xfs 6G "$T/x" -m reflink=1
	cd "$T/x"
	"$VS_TOP/scripts/mkoci" "$T/fix" 4 > /dev/null
	cp -a "$T/fix" oci-cache
	head -c 4096 /dev/urandom > "$T/junk"
	cp "$T/junk" "oci-cache/blobs/sha256/$(sha256sum < "$T/junk" | cut -d' ' -f1)"
	mkimage web-base.img 5G 20
	cowclone -q web-base.img web-1.img > /dev/null
	cowclone -q web-base.img web-2.img > /dev/null
	mkdir -p snapshots/web-1
	cowclone -q web-base.img snapshots/web-1/s1.img > /dev/null
	head -c 60M /dev/urandom > "$T/d"
	for f in web-1.img web-2.img; do
		debugfs -w -R "write $T/d d" "$f" > /dev/null 2>&1
	done
	debugfs -w -R "write $T/d gone" snapshots/web-1/s1.img > /dev/null 2>&1
	debugfs -w -R "rm gone" snapshots/web-1/s1.img > /dev/null 2>&1
	run_split vmstrap df
	assert_ok
	[ "$(jq '.check.images | length' <<< "$output")" = 4 ]
	[ "$(jq -r '.cache.path' <<< "$output")" = "$T/x/oci-cache" ]
	[ "$(jq -r '.cache.images' <<< "$output")" = 5 ]
	[ "$(jq -r '.cache.prunable >= 4096' <<< "$output")" = true ]
	[[ $stderr == *"oci-cache: 5 images"*"what oci-prune would free now"* ]]
	[ "$(jq -r '.cache.entries | length' <<< "$output")" = 5 ]
	[ "$(jq -r '.cache.entries[] | select(.refs == ["one"]) | .frees > 0' <<< "$output")" = true ]
	[[ $stderr == *" frees  one (last used "* ]]
	[[ $stderr == *unique* ]]
	# a base whose clones live frees little: its unique is what it alone holds
	[ "$(jq -r '.check.images[] | select(.path | endswith("web-base.img")) | .unique < .allocated' <<< "$output")" = true ]
	run_split vmstrap reclaim
	assert_ok
	assert_one_line_out() { [ "$(wc -l <<< "$output")" = 1 ]; }
	assert_one_line_out
	[ "$(jq -r '.trimmed >= 55 * 1048576' <<< "$output")" = true ] || fail "$output"
	[ "$(jq -r '.deduped >= 55 * 1048576' <<< "$output")" = true ] || fail "$output"
	[ "$(jq -r '.given_back >= 110 * 1048576' <<< "$output")" = true ] || fail "$output"
	[[ $stderr == *"real total "*" before, "*" after: "*" given back"* ]]
	e2fsck -fn web-2.img > /dev/null && e2fsck -fn snapshots/web-1/s1.img > /dev/null
	debugfs -R "cat /d" web-2.img 2>/dev/null | cmp - "$T/d"
	run_split vmstrap reclaim --dedupe
	assert_ok
	[ "$(jq -r .given_back <<< "$output")" = 0 ]
	run_split vmstrap reclaim --frob
	assert_refused 64 "reclaim: unknown '--frob'"
	run_split vmstrap prune -n
	assert_ok
	[ "$(jq -r .prune.dry_run <<< "$output")" = true ]
	run_split vmstrap prune --budget 0 --keep one
	assert_ok
	[ "$(jq -r '.manifests | length' oci-cache/index.json)" = 1 ]
	run_split vmstrap prune --budget 1x
	assert_refused 64 "invalid size '1x'"
}
