#!/usr/bin/env bats
# imgprep: a VM's identity and a way in, written offline into real ext4
# images (made by mkbase, read back with debugfs, checked with e2fsck), and
# proved in a real guest under TCG: sshd (Debian's openssh-server) lets a
# test in with the key imgprep wrote and shows the host key it made.

load helpers

setup_file() {
	# the guest with sshd (scripts/mkguest -s), once for the file
	"$VS_TOP/scripts/mkguest" -m stay -s amd64 "$BATS_FILE_TMPDIR/g" > /dev/null || return 1
	ssh-keygen -q -t ed25519 -N '' -C tester@host -f "$BATS_FILE_TMPDIR/key"
	ssh-keygen -q -t ecdsa -N '' -C other@host -f "$BATS_FILE_TMPDIR/key2"
	# host keys made once, for the tests that are not about making them
	# (ssh-keygen's RSA key takes up to a second and a half here)
	mkdir "$BATS_FILE_TMPDIR/hk"
	for t in ed25519 ecdsa rsa; do
		ssh-keygen -q -t "$t" -N '' -f "$BATS_FILE_TMPDIR/hk/ssh_host_${t}_key"
	done
}

setup() {
	cd "$T"
	export VMRUN_ACCEL=tcg
	G=$BATS_FILE_TMPDIR/g
	KEY=$BATS_FILE_TMPDIR/key
	KEY2=$BATS_FILE_TMPDIR/key2
	HK=$BATS_FILE_TMPDIR/hk
}

teardown() {
	kill_vms
	[ -z "${HTTP_PID:-}" ] || kill "$HTTP_PID" 2>/dev/null || true
}

# tree DIR: a small root filesystem like a distribution's: users root and
# deb (uid 1000), an image host key, a machine-id, a hosts file.
tree() {
	mkdir -p "$1/etc/ssh" "$1/root" "$1/home/deb" "$1/var/lib/dbus" "$1/bin"
	printf 'root:x:0:0:root:/root:/bin/sh\nbin:x:2:2::/bin:/bin/false\ndeb:x:1000:1000::/home/deb:/bin/sh\nzed:x:1001:1001::/home/zed:/bin/sh\n' > "$1/etc/passwd"
	echo image > "$1/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\timage\n::1\tlocalhost ip6-localhost\n' > "$1/etc/hosts"
	echo 0123456789abcdef0123456789abcdef > "$1/etc/machine-id"
	cp "$1/etc/machine-id" "$1/var/lib/dbus/machine-id"
	echo "PRIVATE" > "$1/etc/ssh/ssh_host_dsa_key"
	echo "ssh-dss AAAA image" > "$1/etc/ssh/ssh_host_dsa_key.pub"
	echo keep > "$1/etc/ssh/sshd_config"
	chmod 700 "$1/root"
}

# image NAME [TREE]: NAME.img, an ext4 of that tree.
image() {
	[ -n "${2:-}" ] || { tree "$T/tree-$1"; set -- "$1" "$T/tree-$1"; }
	mkbase -q -s 5G -o "$1.img" "$2" > /dev/null
}

# dbg IMG CMD: debugfs's answer, its banner aside.
dbg() {
	debugfs -R "$2" "$1" 2> /dev/null
}

# mode_owner IMG PATH: "MODE UID GID" of PATH in the image.
mode_owner() {
	dbg "$1" "stat $2" | sed -n 's/.*Mode: *\([0-7]*\).*/\1/p; s/^User: *\([0-9]*\) *Group: *\([0-9]*\).*/\1 \2/p' | tr '\n' ' ' | sed 's/ $//'
}

@test "-h, -V, bad options and operands" {
	run_split imgprep -h
	assert_ok
	[[ $output == "usage: imgprep "* ]]
	run_split imgprep -V
	assert_ok
	run_split imgprep -x a.img
	assert_refused 64 "unknown option"
	run_split imgprep a.img b.img
	assert_refused 64 "too many operands"
	run_split imgprep < /dev/null
	assert_refused 64 "no pipeline document on stdin"
	run_split imgprep -g ../x a.img
	assert_refused 64 "invalid group name '../x'"
	run_split imgprep --github-user 'a/b' a.img
	assert_refused 64 "not a GitHub login"
}

@test "identity offline: hostname, hosts, a new machine-id, new host keys, authorized_keys with their modes" {
	image web-1
	run_split imgprep -k "$KEY.pub" web-1.img
	assert_ok
	assert_one_line
	p=$(jq -c .prep <<< "$output")
	[ "$(jq -r .hostname <<< "$p")" = web-1 ]
	[ "$(jq -r .disk <<< "$p")" = "$PWD/web-1.img" ]
	[ "$(jq -r .machine_id <<< "$p")" = new ]
	[ "$(dbg web-1.img 'cat /etc/hostname')" = web-1 ]
	[ "$(dbg web-1.img 'cat /etc/hosts')" = "$(printf '127.0.0.1\tlocalhost\n127.0.1.1\tweb-1\n::1\tlocalhost ip6-localhost')" ]
	id=$(dbg web-1.img 'cat /etc/machine-id')
	[[ $id =~ ^[0-9a-f]{32}$ ]] && [ "$id" != 0123456789abcdef0123456789abcdef ]
	[ "$(dbg web-1.img 'cat /var/lib/dbus/machine-id')" = "$id" ]
	# the image's host keys gone, three new ones, sshd's modes
	hk=$(dbg web-1.img 'ls /etc/ssh' | tr -s ' \n' '\n' | grep ssh_host | sort | tr '\n' ' ')
	[ "$hk" = "ssh_host_ecdsa_key ssh_host_ecdsa_key.pub ssh_host_ed25519_key ssh_host_ed25519_key.pub ssh_host_rsa_key ssh_host_rsa_key.pub " ] || fail "$hk"
	[ "$(dbg web-1.img 'cat /etc/ssh/sshd_config')" = keep ]
	for t in ed25519 ecdsa rsa; do
		[ "$(mode_owner web-1.img /etc/ssh/ssh_host_${t}_key)" = "0600 0 0" ]
		[ "$(mode_owner web-1.img /etc/ssh/ssh_host_${t}_key.pub)" = "0644 0 0" ]
		pub=$(dbg web-1.img "cat /etc/ssh/ssh_host_${t}_key.pub")
		jq -e --arg k "$pub" '.host_keys | index($k)' <<< "$p" > /dev/null || fail "$t not in prep"
		# a real key pair: the private half gives the public one
		dbg web-1.img "dump /etc/ssh/ssh_host_${t}_key priv-$t" > /dev/null
		chmod 600 "priv-$t"
		[ "$(ssh-keygen -y -f "priv-$t" | cut -d' ' -f1-2)" = "$(cut -d' ' -f1-2 <<< "$pub")" ]
		# never on stdout or stderr
		grep -v '^-----' "priv-$t" | head -1 > line
		! grep -qF -f line <<< "$output$stderr" || false
	done
	[[ $(jq -r '.host_keys[0]' <<< "$p") == "ssh-ed25519 "*" root@web-1" ]]
	# authorized_keys of root and of the uid 1000 user, with sshd's modes
	[ "$(jq -r '.users | join(" ")' <<< "$p")" = "root deb" ]
	[ "$(jq -r '.authorized[0]' <<< "$p")" = "$(ssh-keygen -lf "$KEY.pub" | cut -d' ' -f2)" ]
	[ "$(mode_owner web-1.img /root)" = "0700 0 0" ]
	[ "$(mode_owner web-1.img /root/.ssh)" = "0700 0 0" ]
	[ "$(mode_owner web-1.img /root/.ssh/authorized_keys)" = "0600 0 0" ]
	[ "$(mode_owner web-1.img /home/deb/.ssh)" = "0700 1000 1000" ]
	[ "$(mode_owner web-1.img /home/deb/.ssh/authorized_keys)" = "0600 1000 1000" ]
	[ "$(dbg web-1.img 'cat /root/.ssh/authorized_keys')" = "$(cat "$KEY.pub")" ]
	[ "$(dbg web-1.img 'cat /home/deb/.ssh/authorized_keys')" = "$(cat "$KEY.pub")" ]
	e2fsck -fn web-1.img > /dev/null 2>&1 || fail "e2fsck: $(e2fsck -fn web-1.img 2>&1)"
}

@test "authorized_keys: appended, never twice; -u; a missing home made; what was there stays" {
	tree t
	mkdir -p t/home/zed/.ssh
	echo 'from="10.0.0.1" ssh-rsa AAAAB3old zed@old' > t/home/zed/.ssh/authorized_keys
	image a t
	run_split imgprep -q --host-keys "$HK" -k "$KEY.pub" -u zed a.img
	assert_ok
	[ -z "$stderr" ]
	[ "$(jq -r '.prep.users | join(" ")' <<< "$output")" = "root zed" ]
	run_split imgprep -q -k "$KEY.pub" -k "$KEY2.pub" -u zed --no-host-keys a.img
	assert_ok
	[ "$(jq -r '.prep.authorized | length' <<< "$output")" = 2 ]
	[ "$(jq -r '.prep.host_keys | length' <<< "$output")" = 0 ]
	want=$(printf '%s\n%s\n%s' 'from="10.0.0.1" ssh-rsa AAAAB3old zed@old' "$(cat "$KEY.pub")" "$(cat "$KEY2.pub")")
	[ "$(dbg a.img 'cat /home/zed/.ssh/authorized_keys')" = "$want" ]
	[ "$(dbg a.img 'cat /root/.ssh/authorized_keys')" = "$(cat "$KEY.pub" "$KEY2.pub")" ]
	[ "$(mode_owner a.img /home/zed/.ssh/authorized_keys)" = "0600 1001 1001" ]
	# the uid 1000 user is not the default once -u names another
	! dbg a.img 'ls /home/deb' | grep -q '\.ssh' || false
	# no keys: no authorized_keys touched
	image b
	run_split imgprep -q --host-keys "$HK" b.img
	assert_ok
	[ "$(jq -r '.prep.authorized | length' <<< "$output")" = 0 ]
	! dbg b.img 'ls /root' | grep -q '\.ssh' || false
	e2fsck -fn a.img > /dev/null 2>&1
}

@test "the pipeline: cowclone NAME | imgprep, the name from the disk; -n; a name that is no hostname" {
	image slicer-base
	printf '{"base":{"path":"%s/slicer-base.img","group":"slicer"}}\n' "$PWD" > doc.json
	run_split sh -c "cowclone -q slicer-1 < doc.json | imgprep -q --host-keys '$HK' -k '$KEY.pub'"
	assert_ok
	[ "$(jq -r .disk.path <<< "$output")" = "$PWD/slicer-1.img" ]
	[ "$(jq -r .base.group <<< "$output")" = slicer ]
	[ "$(jq -r .prep.hostname <<< "$output")" = slicer-1 ]
	[ "$(dbg slicer-1.img 'cat /etc/hostname')" = slicer-1 ]
	[ "$(dbg slicer-base.img 'cat /etc/hostname')" = image ]
	run_split imgprep -q --host-keys "$HK" -n db.example -k "$KEY.pub" slicer-1.img
	assert_ok
	[ "$(dbg slicer-1.img 'cat /etc/hostname')" = db.example ]
	cp slicer-1.img bad_name.img
	sum=$(imgsum bad_name.img)
	run_split imgprep bad_name.img
	assert_refused 64 "'bad_name' is not a valid hostname"
	run_split imgprep -n -x slicer-1.img
	assert_refused 64 "not a valid hostname"
	[ "$(imgsum bad_name.img)" = "$sum" ]
	run_split sh -c 'echo "{\"base\":{}}" | imgprep'
	assert_refused 65 "no 'disk' section"
}

@test "userdata: with systemd a unit, without it rc.local; the script kept root's" {
	tree s
	mkdir -p s/lib/systemd
	echo '#!/bin/sh' > s/lib/systemd/systemd
	chmod 755 s/lib/systemd/systemd
	image s s
	printf 'apt-get install -y nginx\n' > ud.sh
	run_split imgprep -q --host-keys "$HK" --userdata ud.sh s.img
	assert_ok
	[ "$(jq -r .prep.userdata <<< "$output")" = /etc/vmstrap/userdata ]
	[ "$(jq -r .prep.userdata_init <<< "$output")" = systemd ]
	[ "$(dbg s.img 'cat /etc/vmstrap/userdata')" = "$(printf '#!/bin/sh\napt-get install -y nginx')" ]
	[ "$(mode_owner s.img /etc/vmstrap/userdata)" = "0700 0 0" ]
	[ "$(mode_owner s.img /etc/vmstrap/userdata-run)" = "0755 0 0" ]
	unit=$(dbg s.img 'cat /etc/systemd/system/vmstrap-userdata.service')
	[[ $unit == *"ConditionPathExists=!/etc/vmstrap/userdata-ran"* ]]
	[[ $unit == *"ExecStart=/etc/vmstrap/userdata-run"* ]]
	[[ $(dbg s.img 'stat /etc/systemd/system/multi-user.target.wants/vmstrap-userdata.service') == *"Fast link dest: \"/etc/systemd/system/vmstrap-userdata.service\""* ]]
	# without systemd: rc.local, before its exit 0
	tree r
	printf '#!/bin/sh -e\necho mine\nexit 0\n' > r/etc/rc.local
	chmod 755 r/etc/rc.local
	image r r
	run_split imgprep -q --host-keys "$HK" --userdata <(echo 'echo from a pipe') r.img
	assert_ok
	[ "$(jq -r .prep.userdata_init <<< "$output")" = rc.local ]
	[ "$(dbg r.img 'cat /etc/rc.local')" = "$(printf '#!/bin/sh -e\necho mine\n/etc/vmstrap/userdata-run   # vmstrap userdata, once\nexit 0')" ]
	[ "$(mode_owner r.img /etc/rc.local)" = "0755 0 0" ]
	# again: one line, not two
	run_split imgprep -q --host-keys "$HK" --userdata ud.sh r.img
	assert_ok
	[ "$(dbg r.img 'cat /etc/rc.local' | grep -c userdata-run)" = 1 ]
	# the group's userdata from the configuration
	image g
	cat > slicer-mac.yaml <<-EOF
	config:
	  ssh_keys: ["$(cat "$KEY.pub")"]
	  host_groups:
	    - name: web
	      storage_size: 5G
	      userdata_file: ud.sh
	EOF
	run_split imgprep -q --host-keys "$HK" -g web g.img
	assert_ok
	[ "$(jq -r .prep.authorized[0] <<< "$output")" = "$(ssh-keygen -lf "$KEY.pub" | cut -d' ' -f2)" ]
	[[ $(dbg g.img 'cat /etc/vmstrap/userdata') == *nginx* ]]
	e2fsck -fn s.img > /dev/null 2>&1 && e2fsck -fn r.img > /dev/null 2>&1
}

# github DIR: a loopback HTTP server for DIR, standing in for github.com
# (the one behaviour it fakes: USER.keys, or a 404).
github() {
	local port
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	python3 -m http.server -b 127.0.0.1 -d "$1" "$port" > /dev/null 2>&1 &
	HTTP_PID=$!
	export VMSTRAP_GITHUB_URL=http://127.0.0.1:$port
	for _ in $(seq 100); do
		curl -s -o /dev/null "$VMSTRAP_GITHUB_URL/" && return 0
		sleep 0.05
	done
	fail "the test's HTTP server did not start"
}

@test "github_user: the keys GitHub serves; a 404, an empty answer, a bad one, no server: refused, nothing changed" {
	mkdir gh
	cat "$KEY.pub" "$KEY2.pub" > gh/alice.keys
	: > gh/empty.keys
	echo "<html>rate limited</html>" > gh/html.keys
	github gh
	image a
	run_split imgprep -q --host-keys "$HK" --github-user alice a.img
	assert_ok
	[ "$(jq -r '.prep.authorized | length' <<< "$output")" = 2 ]
	[ "$(dbg a.img 'cat /root/.ssh/authorized_keys')" = "$(cat gh/alice.keys)" ]
	image b
	sum=$(imgsum b.img)
	run_split imgprep --github-user nobody b.img
	assert_refused 66 "github user nobody: no such user \(404"
	run_split imgprep --github-user empty b.img
	assert_refused 65 "github user empty has no public keys"
	run_split imgprep --github-user html b.img
	assert_refused 65 "github.com/html.keys:1: not an OpenSSH public key"
	[[ $stderr != *"rate limited"* ]]
	kill "$HTTP_PID"
	wait "$HTTP_PID" 2>/dev/null || true
	run_split imgprep --github-user alice b.img
	assert_refused 69 "cannot fetch the keys of github user alice"
	[ "$(imgsum b.img)" = "$sum" ]
	[ "$(dbg b.img 'cat /etc/hostname')" = image ]
}

@test "refused, with the image unchanged: not ext4, no /etc, a private key, bad key files, missing files, no such user, a journal to recover, a locked disk" {
	image a
	sum=$(imgsum a.img)
	head -c 1M /dev/urandom > junk.img
	run_split imgprep junk.img
	assert_refused 65 "junk.img holds no ext2/3/4 filesystem"
	mkdir -p empty
	mkbase -q -s 5G -o noetc.img empty > /dev/null
	run_split imgprep noetc.img
	assert_refused 65 "no /etc in the image"
	run_split imgprep -k "$KEY" a.img
	assert_refused 65 "a private key, not a public key"
	[[ $stderr != *"$(sed -n 2p "$KEY")"* ]]
	echo "just words" > words.pub
	run_split imgprep -k words.pub a.img
	assert_refused 65 "words.pub:1: not an OpenSSH public key"
	printf '# nothing\n\n' > none.pub
	run_split imgprep -k none.pub a.img
	assert_refused 65 "none.pub: no public key in it"
	run_split imgprep -k missing.pub a.img
	assert_refused 66 "key file missing.pub: No such file"
	run_split imgprep --userdata missing.sh a.img
	assert_refused 66 "userdata file missing.sh: No such file"
	run_split imgprep -u nosuch -k "$KEY.pub" a.img
	assert_refused 65 "no user nosuch in the image's /etc/passwd"
	run_split imgprep nothere.img
	assert_refused 66 "nothere.img: No such file"
	mkdir dir.img
	run_split imgprep dir.img
	assert_refused 65 "dir.img is not a disk image"
	[ "$(imgsum a.img)" = "$sum" ]
	# a journal that needs recovery (a VM that did not stop cleanly)
	cp --sparse=always a.img dirty.img
	debugfs -w -R "feature needs_recovery" dirty.img > /dev/null 2>&1
	dsum=$(imgsum dirty.img)
	run_split imgprep dirty.img
	assert_refused 65 "its journal needs recovery.*imgcheck -p"
	[ "$(imgsum dirty.img)" = "$dsum" ]
	# another program holds the disk, as a running QEMU does
	flock -x a.img sleep 30 &
	locker=$!
	sleep 0.2
	run_split imgprep -k "$KEY.pub" a.img
	kill "$locker"
	assert_refused 75 "a.img is in use by another program"
	[ "$(imgsum a.img)" = "$sum" ]
	ls -A /tmp | grep -q '^imgprep\.' && fail "a host key directory was left: $(ls -d /tmp/imgprep.*)"
	true
}

# boot NAME: start NAME.img, the sshd guest, and wait for its boot line.
boot() {
	run_split vmrun -q -d --kernel "$G/vmlinuz" --initrd "$G/initrd.img" --mem 512M --disk "$1.img"
	assert_ok
	wait_console "$1" "vmstrap-guest: up $1 boot" 90
}

# vm_ssh NAME CMD: CMD in VM NAME over ssh, its host key pinned from the prep
# section (NAME.prep), the key imgprep wrote.
vm_ssh() {
	local port
	port=$(vmrun ls | jq -r --arg n "$1" 'select(.name == $n) | .ssh' | cut -d: -f2)
	jq -r --arg n "$1" '.prep.host_keys[] | $n + " " + .' "$1.prep" > "$1.known"
	ssh -o BatchMode=yes -o ConnectTimeout=30 -o HostKeyAlias="$1" \
		-o UserKnownHostsFile="$PWD/$1.known" -o StrictHostKeyChecking=yes \
		-o GlobalKnownHostsFile=/dev/null -i "$KEY" -p "$port" root@127.0.0.1 "$2"
}

@test "a real guest: in with the key imgprep wrote, its own hostname, machine-id and host key; userdata once across two boots" {
	mkbase -q -s 5G -o g-base.img "$G/rootfs" > /dev/null
	printf 'echo userdata ran on $(hostname)\necho once >> /root/userdata-count\n' > ud.sh
	for n in web-1 web-2; do
		cowclone -q g-base.img "$n.img" > /dev/null
		imgprep -q -k "$KEY.pub" --userdata ud.sh "$n.img" > "$n.prep"
	done
	boot web-1
	boot web-2
	# a VM's running disk is refused
	run_split imgprep -k "$KEY.pub" web-1.img
	assert_refused 75 "in use by VM web-1"
	for n in web-1 web-2; do
		out=$(vm_ssh "$n" 'cat /etc/hostname /etc/machine-id; cat /root/userdata-count; cat /etc/ssh/ssh_host_ed25519_key.pub')
		[ "$(sed -n 1p <<< "$out")" = "$n" ] || fail "$n: $out"
		id[${n#web-}]=$(sed -n 2p <<< "$out")
		[ "$(sed -n 3p <<< "$out")" = once ]
		[ "$(sed -n 4p <<< "$out")" = "$(jq -r '.prep.host_keys[0]' "$n.prep")" ]
		[[ $(cat "run/$n/console.log") == *"userdata ran on $n"* ]]
	done
	[ "${id[1]}" != "${id[2]}" ]
	[ "${id[1]}" != 0123456789abcdef0123456789abcdef ]
	[ "$(jq -r '.prep.host_keys[0]' web-1.prep)" != "$(jq -r '.prep.host_keys[0]' web-2.prep)" ]
	# the guest's sshd presents the key the prep section holds (in() pins
	# it: StrictHostKeyChecking), never the image's
	base_key=$(cat "$G/rootfs/etc/ssh/ssh_host_ed25519_key.pub")
	! grep -qF "$(cut -d' ' -f2 <<< "$base_key")" web-1.known || false
	# a second boot: the userdata does not run again, the identity stays
	run_split vmrun stop web-1
	assert_ok
	boot web-1
	out=$(vm_ssh web-1 'cat /var/lib/vmstrap/boots /root/userdata-count /etc/machine-id')
	[ "$out" = "$(printf '2\nonce\n%s' "${id[1]}")" ] || fail "$out"
}

@test "--host-keys DIR: the keys given, not new ones; bad ones refused, nothing changed" {
	image a
	mkdir hk
	for t in ed25519 ecdsa rsa; do
		ssh-keygen -q -t "$t" -N '' -C made@ahead -f "hk/ssh_host_${t}_key"
	done
	run_split imgprep -q --host-keys hk a.img
	assert_ok
	for t in ed25519 ecdsa rsa; do
		want="$(cut -d' ' -f1-2 "hk/ssh_host_${t}_key.pub") root@a"
		[ "$(dbg a.img "cat /etc/ssh/ssh_host_${t}_key.pub")" = "$want" ]
		jq -e --arg k "$want" '.prep.host_keys | index($k)' <<< "$output" > /dev/null
		[ "$(dbg a.img "cat /etc/ssh/ssh_host_${t}_key")" = "$(cat "hk/ssh_host_${t}_key")" ]
		[ "$(mode_owner a.img "/etc/ssh/ssh_host_${t}_key")" = "0600 0 0" ]
	done
	# --known-hosts: a's lines replaced, another's kept
	printf 'a ssh-ed25519 AAAAold\nother ssh-ed25519 AAAAother\n' > kh
	run_split imgprep -q --host-keys hk --known-hosts kh a.img
	assert_ok
	[ "$(grep -c '^a ' kh)" = 3 ] && grep -qx 'other ssh-ed25519 AAAAother' kh
	! grep -q AAAAold kh || false
	grep -qxF "a $(cut -d' ' -f1-2 hk/ssh_host_rsa_key.pub) root@a" kh
	image b
	sum=$(imgsum b.img)
	run_split imgprep --host-keys hk --no-host-keys b.img
	assert_refused 64 "not both"
	run_split imgprep --host-keys nodir b.img
	assert_refused 66 "host key nodir/ssh_host_ed25519_key: No such file"
	cp hk/ssh_host_ed25519_key.pub hk/ssh_host_rsa_key.pub
	run_split imgprep --host-keys hk b.img
	assert_refused 65 "ssh_host_rsa_key.pub: a ssh-ed25519 key, not ssh-rsa"
	cp hk/ssh_host_rsa_key.pub hk/ssh_host_ecdsa_key
	run_split imgprep --host-keys hk b.img
	assert_refused 65 "ssh_host_ecdsa_key: not an OpenSSH private key"
	[ "$(imgsum b.img)" = "$sum" ]
}

@test "what a guest's user could plant is refused before anything is written: symlinks, hard links, odd homes" {
	tree t
	echo 'root:*:1::::::' > t/etc/shadow
	mkdir -p t/home/deb/.ssh
	ln -s /etc/shadow t/home/deb/.ssh/authorized_keys
	image a t
	sum=$(imgsum a.img)
	run_split imgprep -k "$KEY.pub" a.img
	assert_refused 65 "/home/deb/.ssh/authorized_keys in the image is a symbolic link: refused"
	[ "$(imgsum a.img)" = "$sum" ]
	# .ssh itself a symlink
	rm -rf t/home/deb/.ssh
	ln -s /etc t/home/deb/.ssh
	image b t
	sum=$(imgsum b.img)
	run_split imgprep -k "$KEY.pub" b.img
	assert_refused 65 "/home/deb/.ssh in the image is a symbolic link"
	[ "$(imgsum b.img)" = "$sum" ]
	# a hard link to root's file
	rm t/home/deb/.ssh
	mkdir t/home/deb/.ssh
	ln t/etc/shadow t/home/deb/.ssh/authorized_keys
	image c t
	sum=$(imgsum c.img)
	run_split imgprep -k "$KEY.pub" c.img
	assert_refused 65 "authorized_keys in the image has 2 hard links: refused"
	[ "$(imgsum c.img)" = "$sum" ]
	# homes that are no plain path, or root's
	n=0
	for home in /home/a/. /home/x/../../etc /root; do
		n=$((n + 1))
		tree "h$n"
		sed -i "s|^deb:x:1000:1000::/home/deb:|deb:x:1000:1000::$home:|" "h$n/etc/passwd"
		image d "h$n"
		sum=$(imgsum d.img)
		run_split imgprep -k "$KEY.pub" d.img
		case $home in
		/root) assert_refused 65 "user deb's home is root's" ;;
		*) assert_refused 65 "user deb's home '$home' in /etc/passwd is not a plain path" ;;
		esac
		[ "$(imgsum d.img)" = "$sum" ]
		e2fsck -fn d.img > /dev/null 2>&1 || fail "$home: e2fsck"
	done
	# /etc/hosts a directory: refused before the hostname is written
	tree e
	rm e/etc/hosts && mkdir e/etc/hosts
	image e e
	sum=$(imgsum e.img)
	run_split imgprep e.img
	assert_refused 65 "/etc/hosts in the image is not a regular file"
	[ "$(imgsum e.img)" = "$sum" ]
	# a userdata with a NUL byte is no script
	printf 'echo hi\0AAAA' > nul.sh
	run_split imgprep --userdata nul.sh e.img
	assert_refused 65 "the userdata holds a NUL byte"
	# a uid that is not a number matches nothing
	tree f
	sed -i 's/^deb:x:1000:1000:/deb:x:1000x:1000:/' f/etc/passwd
	image f f
	run_split imgprep -q --host-keys "$HK" -k "$KEY.pub" f.img
	assert_ok
	[ "$(jq -r '.prep.users | join(" ")' <<< "$output")" = root ]
}

@test "authorized_keys: a key in a comment is not one; a key with options is kept as it is; rc.local made executable, OpenRC's local.d" {
	tree t
	mkdir -p t/root/.ssh t/home/deb/.ssh
	echo "# revoked: $(cat "$KEY.pub")" > t/root/.ssh/authorized_keys
	echo "from=\"10.0.0.1\",command=\"echo a b\" $(cat "$KEY.pub")" > t/home/deb/.ssh/authorized_keys
	printf '#!/bin/sh\nexit 0\n# the end\n' > t/etc/rc.local
	chmod 644 t/etc/rc.local
	image a t
	run_split imgprep -q --host-keys "$HK" -k "$KEY.pub" --userdata <(echo true) a.img
	assert_ok
	[ "$(dbg a.img 'cat /root/.ssh/authorized_keys')" = "$(printf '# revoked: %s\n%s' "$(cat "$KEY.pub")" "$(cat "$KEY.pub")")" ]
	[ "$(dbg a.img 'cat /home/deb/.ssh/authorized_keys')" = "from=\"10.0.0.1\",command=\"echo a b\" $(cat "$KEY.pub")" ]
	[ "$(dbg a.img 'cat /etc/rc.local')" = "$(printf '#!/bin/sh\n/etc/vmstrap/userdata-run   # vmstrap userdata, once\nexit 0\n# the end')" ]
	[ "$(mode_owner a.img /etc/rc.local)" = "0755 0 0" ]
	tree o
	mkdir -p o/etc/local.d
	image o o
	run_split imgprep -q --host-keys "$HK" --userdata <(echo true) o.img
	assert_ok
	[ "$(jq -r .prep.userdata_init <<< "$output")" = local.d ]
	[ "$(mode_owner o.img /etc/local.d/vmstrap-userdata.start)" = "0755 0 0" ]
	[[ $(dbg o.img 'cat /etc/local.d/vmstrap-userdata.start') == *"exec /etc/vmstrap/userdata-run"* ]]
	! dbg o.img 'ls /etc' | grep -q rc.local || false
}

@test "a signal while the host keys are made leaves no private key behind" {
	image a
	mkdir tmp
	for sig in TERM INT; do
		# (the signal's default action: a background job of a script
		# has SIGINT ignored, one under nohup SIGHUP)
		TMPDIR=$PWD/tmp env --default-signal=INT,TERM imgprep -k "$KEY.pub" a.img > out.json 2> err.txt &
		pid=$!
		for _ in $(seq 200); do
			compgen -G 'tmp/imgprep.*/ssh_host_*' > /dev/null && break
			sleep 0.005
		done
		kill -s "$sig" "$pid"
		st=0
		wait "$pid" || st=$?
		[ "$st" -eq $((128 + $(kill -l "$sig"))) ] || fail "SIG$sig: status $st: $(cat err.txt)"
		[ ! -s out.json ]
		sleep 0.5	# (a child that outlived it would write by now)
		[ -z "$(ls -A tmp)" ] || fail "SIG$sig left: $(ls -R tmp)"
	done
}
