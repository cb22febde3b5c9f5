#!/usr/bin/env bats
# vmrun: real guests (scripts/mkguest: Debian's cloud kernel, busybox-static,
# an initrd loading the virtio modules) booted by real QEMU under TCG, amd64
# and arm64, from disks built by mkbase and cloned by cowclone.

load helpers

setup_file() {
	local g=$BATS_FILE_TMPDIR/guest
	"$VS_TOP/scripts/mkguest" amd64 "$g/amd64" > /dev/null || return 1
	"$VS_TOP/scripts/mkguest" arm64 "$g/arm64" > /dev/null || return 1
	for a in amd64 arm64; do
		"$VS_BIN/mkbase" -q -s 5G -o "$g/$a/base.img" "$g/$a/rootfs" > /dev/null || return 1
	done
	export G=$g
	# a probe's answer is kept per boot: each test probes afresh
	export XDG_RUNTIME_DIR=$BATS_FILE_TMPDIR
}

setup() {
	cd "$T"
	export XDG_RUNTIME_DIR=$T
}

teardown() {
	kill_vms
}

# disk ARCH NAME: a clone of ARCH's base, NAME.img, as the warm path makes it.
disk() {
	cowclone -q "$G/$1/base.img" "$T/$2.img" > /dev/null
}

# boot ARCH NAME [vmrun args...]: start NAME from ARCH's kernel and initrd.
boot() {
	local a=$1 n=$2
	shift 2
	run_split vmrun --kernel "$G/$a/vmlinuz" --initrd "$G/$a/initrd.img" \
		--disk "$T/$n.img" --mem 512M "$@"
}

@test "-h, -V, bad options, names, sizes and commands" {
	run_split vmrun -h
	assert_ok
	[[ $output == usage:* ]]
	run_split vmrun -V
	assert_ok
	run_split vmrun -x
	assert_refused 64 "unknown option"
	run_split vmrun --kernel k --disk d -n ../x
	assert_refused 64 "invalid VM name '../x'"
	run_split vmrun --kernel k --disk d -n a/b
	assert_refused 64 "invalid VM name 'a/b'"
	run_split vmrun --kernel k --disk d --mem 12
	assert_refused 64 "12"
	run_split vmrun --kernel k --disk d --mem 1.5G
	assert_refused 64 "1.5G"
	run_split vmrun --kernel k --disk d --mem 16M
	assert_refused 64 "too little"
	run_split vmrun --kernel k --disk d --cpus 0
	assert_refused 64 "--cpus"
	run_split vmrun --kernel k --disk d -A warp
	assert_refused 64 "unknown accelerator 'warp'"
	run_split vmrun frobnicate
	assert_refused 64 "unknown command 'frobnicate'"
	run_split vmrun stop
	assert_refused 64 "stop needs one VM NAME"
	run_split vmrun -d ls
	assert_refused 64 "ls takes only"
	run_split vmrun stop ../etc
	assert_refused 64 "invalid VM name"
	run_split vmrun stop nosuch
	assert_refused 66 "no VM called nosuch"
	run_split vmrun < /dev/null
	assert_refused 64 "no pipeline document"
	run_split vmrun <<< '{"disk": {"path": "/x.img"}}'
	assert_refused 65 "no kernel.path"
	run_split vmrun <<< '{"kernel": {"path": "/k"}}'
	assert_refused 65 "no disk.path"
	run_split vmrun <<< 'nope'
	assert_refused 65 "at byte"
	[ ! -e run ] || [ -z "$(ls run)" ]
}

@test "missing or wrong kernel, initrd and disk are refused, leaving nothing" {
	disk amd64 vm
	run_split vmrun --kernel "$T/none" --disk vm.img
	assert_refused 66 "kernel $T/none: No such file"
	echo "not a kernel" > notk
	run_split vmrun --kernel notk --disk vm.img
	assert_refused 65 "kernel $T/notk"
	run_split vmrun --kernel "$G/amd64/vmlinuz" --initrd none --disk vm.img
	assert_refused 66 "initrd $T/none"
	run_split vmrun --kernel "$G/amd64/vmlinuz" --disk none.img
	assert_refused 66 "disk $T/none.img: No such file"
	mkdir dir.img
	run_split vmrun --kernel "$G/amd64/vmlinuz" --disk dir.img
	assert_refused 65 "not a file"
	run_split vmrun -A kvm --kernel "$G/arm64/vmlinuz" --disk vm.img
	assert_refused 69 "kvm runs only guests of the host's architecture"
	run_split env VMRUN_ACCEL=warp vmrun --kernel "$G/amd64/vmlinuz" --disk vm.img
	assert_refused 64 "unknown accelerator 'warp' from VMRUN_ACCEL"
	run_split vmrun -A hvf --kernel "$G/amd64/vmlinuz" --disk vm.img
	assert_refused 69 "hvf"
	[ ! -e run ] || [ -z "$(ls run)" ]
}

# boots ARCH: the guest boots from a clone, prints its marker, writes its
# file to the clone, powers off; vmrun exits 0 with the vm section.
boots() {
	local a=$1 sum
	disk "$a" "vm-$a"
	sum=$(imgsum "$G/$a/base.img")
	boot "$a" "vm-$a" -A tcg
	assert_ok
	grep -q "vmstrap-guest: up vm-$a boot 1" "run/vm-$a/console.log"
	# the console was on stderr too
	[[ $stderr == *"vmstrap-guest: up vm-$a boot 1"* ]]
	[ "$(jq -r .vm.state <<< "$output")" = stopped ]
	[ "$(jq -r .vm.arch <<< "$output")" = "$a" ]
	[ "$(jq -r .vm.accel <<< "$output")" = tcg ]
	[ "$(jq -r .vm.name <<< "$output")" = "vm-$a" ]
	[[ $(jq -r .vm.ssh <<< "$output") =~ ^127\.0\.0\.1:[0-9]+$ ]]
	[ "$(jq -r .vm.console <<< "$output")" = "$T/run/vm-$a/console.log" ]
	# the file the guest wrote, read from the clone
	[ "$(debugfs -R 'cat /var/lib/vmstrap/booted' "vm-$a.img" 2>/dev/null)" = "vm-$a boot 1" ]
	e2fsck -fn "vm-$a.img" > /dev/null
	[ "$(imgsum "$G/$a/base.img")" = "$sum" ] || fail "the base changed"
	run_split vmrun ls
	assert_ok
	[ "$(jq -r 'select(.name == "vm-'"$a"'") | .state' <<< "$output")" = stopped ]
}

@test "amd64: boots under TCG, marker on the console, its file in the clone, the base untouched" {
	boots amd64
}

@test "arm64: boots under TCG, marker on the console, its file in the clone, the base untouched" {
	boots arm64
}

@test "the pipeline document: kernel from kextract, disk from cowclone; the VM keeps its data" {
	kextract -q -C "$T" "$G/amd64/rootfs" > k.json
	[ "$(jq -r .kernel.initrd k.json)" != null ]
	cp --sparse=always "$G/amd64/base.img" slicer-base.img
	jq --arg b "$T/slicer-base.img" '.base = {path: $b}' k.json | cowclone -q web-1 > doc.json
	[ "$(jq -r .disk.path doc.json)" = "$T/web-1.img" ]
	run_split vmrun --mem 512M -A tcg < doc.json
	assert_ok
	# the document's other sections pass through
	[ "$(jq -r .kernel.path <<< "$output")" = "$(jq -r .kernel.path k.json)" ]
	[ "$(jq -r .vm.name <<< "$output")" = web-1 ]
	run_split vmrun --mem 512M -A tcg < doc.json
	assert_ok
	grep -q "vmstrap-guest: up web-1 boot 2" run/web-1/console.log
}

@test "-d, ls, stop: running, then a clean ACPI power-off" {
	disk amd64 bg
	boot amd64 bg -d -A tcg -a vmstrap.mode=stay
	assert_ok
	[ "$(jq -r .vm.state <<< "$output")" = running ]
	pid=$(jq -r .vm.pid <<< "$output")
	kill -0 "$pid"
	[[ $(cat "/proc/$pid/cmdline" | tr '\0' ' ') == *qemu-system-x86_64* ]]
	run_split vmrun ls
	assert_ok
	line=$(jq -c 'select(.name == "bg")' <<< "$output")
	[ "$(jq -r .state <<< "$line")" = running ]
	[ "$(jq -r .pid <<< "$line")" = "$pid" ]
	[ "$(jq -r .disk <<< "$line")" = "$T/bg.img" ]
	[[ $(jq -r .ssh <<< "$line") =~ ^127\.0\.0\.1:[0-9]+$ ]]
	[ "$(jq -r .paused <<< "$line")" = false ]
	wait_console bg "vmstrap-guest: up bg"
	# paused by hand over QMP (socat): ls says so, resume resumes it
	printf '%s\n' '{"execute":"qmp_capabilities"}' '{"execute":"stop"}' |
		socat -t 1 - "UNIX-CONNECT:run/bg/qmp.sock" > /dev/null
	[ "$(vmrun ls | jq -r 'select(.name == "bg") | .paused')" = true ]
	run_split vmrun resume bg
	assert_ok
	[[ $stderr == *"bg resumed (its guest was paused)"* ]]
	[ -z "$output" ]
	[ "$(vmrun ls | jq -r 'select(.name == "bg") | .paused')" = false ]
	run_split vmrun resume bg
	assert_ok
	[[ $stderr == *"bg is not paused"* ]]
	run_split vmrun resume
	assert_refused 64 "resume needs one VM NAME"
	run_split vmrun resume ../x
	assert_refused 64 "invalid VM name"
	run_split vmrun resume nosuch
	assert_refused 66 "no VM called nosuch"
	run_split vmrun stop bg
	assert_ok
	[[ $stderr == *"bg powered off"* ]]
	grep -q "power button: powering off" run/bg/console.log
	# QEMU is gone (or a zombie its parent has yet to reap)
	[ ! -e "/proc/$pid" ] || grep -q '^State:.*[ZX]' "/proc/$pid/status" ||
		fail "QEMU $pid still runs after vmrun stop"
	run_split vmrun ls
	[ "$(jq -r 'select(.name == "bg") | .state' <<< "$output")" = stopped ]
	e2fsck -fn bg.img > /dev/null
	# stopping a stopped VM says so and succeeds; resuming one cannot
	run_split vmrun stop bg
	assert_ok
	[[ $stderr == *"not running"* ]]
	run_split vmrun resume bg
	assert_refused 69 "VM bg is not running \(stopped\)"
}

@test "a killed QEMU shows as crashed, and its stale state is not trusted" {
	disk amd64 k
	boot amd64 k -d -A tcg -a vmstrap.mode=stay
	assert_ok
	pid=$(jq -r .vm.pid <<< "$output")
	wait_console k "vmstrap-guest: up k boot 1"
	kill -9 "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	run_split vmrun ls
	line=$(jq -c 'select(.name == "k")' <<< "$output")
	[ "$(jq -r .state <<< "$line")" = crashed ]
	[ "$(jq -r .pid <<< "$line")" = 0 ]
	# the stale pid file does not block a new start
	boot amd64 k -A tcg -q
	assert_ok
	grep -q "vmstrap-guest: up k boot 2" run/k/console.log
}

@test "a guest kernel panic is a crash: non-zero, said, and ls shows it" {
	disk amd64 p
	boot amd64 p -A tcg -q -a rdinit=/nonexistent
	assert_refused 65 "VM p crashed: Kernel panic - not syncing"
	run_split vmrun ls
	[ "$(jq -r 'select(.name == "p") | .state' <<< "$output")" = crashed ]
}

@test "a disk in use is refused: by a running VM (named), by another QEMU" {
	disk amd64 one
	boot amd64 one -d -A tcg -a vmstrap.mode=stay
	assert_ok
	boot amd64 one -n two -A tcg
	assert_refused 75 "disk $T/one.img is in use by VM one \(QEMU pid [0-9]+\)"
	boot amd64 one -A tcg
	assert_refused 75 "VM one is already running"
	[ ! -e run/two ]
	vmrun -q stop -t 5 one
	# a QEMU vmrun did not start
	disk amd64 three
	qemu-system-x86_64 -accel tcg -M q35 -nodefaults -display none -m 128 \
		-drive file="$T/three.img",format=raw,if=none,id=d0 \
		-device virtio-blk-pci,drive=d0 -S -daemonize -pidfile "$T/foreign.pid"
	boot amd64 three -A tcg
	kill "$(cat foreign.pid)"
	assert_refused 75 "in use by another program"
}

@test "a base image is not booted without --allow-base" {
	mkbase -q -s 5G -o "$T/slicer-base.img" "$G/amd64/rootfs" > /dev/null
	run_split vmrun --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk slicer-base.img
	assert_refused 64 "slicer-base.img is the base image of group slicer: every clone of it would inherit"
	run_split vmrun -A tcg --mem 512M --allow-base --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk slicer-base.img
	assert_ok
	# still the base after that boot changed its time, and through links
	ln -s slicer-base.img sym.img
	ln slicer-base.img hard.img
	for d in slicer-base.img sym.img hard.img; do
		run_split vmrun --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk "$d"
		assert_refused 64 "is the base image of group slicer"
	done
}

@test "auto acceleration probes /dev/kvm instead of trusting it, and says what it chose" {
	disk amd64 auto
	unset VMRUN_ACCEL
	boot amd64 auto
	assert_ok
	accel=$(jq -r .vm.accel <<< "$output")
	line=$(grep 'accel ' <<< "$stderr")
	[[ $line == "vmrun: auto: accel $accel: "* ]]
	if [ ! -e /dev/kvm ]; then
		[[ $line == *"no /dev/kvm"* ]]
	elif [ "$accel" = tcg ]; then
		# here /dev/kvm exists but cannot run a guest: a probe said so
		[[ $line == *"/dev/kvm is there but"* ]]
	fi
	grep -q "vmstrap-guest: up auto boot 1" run/auto/console.log
	# the answer is kept for this boot of the host
	boot amd64 auto
	assert_ok
	[[ $stderr == *"probed earlier this boot"* || $stderr == *"no /dev/kvm"* ]]
	# VMRUN_ACCEL overrides, and says so
	VMRUN_ACCEL=tcg boot amd64 auto
	assert_ok
	[[ $stderr == *"accel tcg: VMRUN_ACCEL=tcg"* ]]
}

@test "CPUs and memory come from the group; QEMU gets no stray descriptors" {
	cat > slicer-mac.yaml <<-EOF
	config:
	  host_groups:
	    - name: web
	      count: 1
	      vcpu: 3
	      ram_mb: 768
	      storage_size: 5G
	      network: {mode: nat}
	EOF
	disk amd64 web-1
	exec 7> "$T/leak"
	run_split vmrun -d -g web -A tcg --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk web-1.img -a vmstrap.mode=stay
	exec 7>&-
	assert_ok
	pid=$(jq -r .vm.pid <<< "$output")
	args=$(tr '\0' ' ' < "/proc/$pid/cmdline")
	[[ $args == *"-smp 3 "* ]]
	[[ $args == *"-m 768M "* ]]
	! ls -l "/proc/$pid/fd" | grep -q "$T/leak" || false
	# detached: its own session, nothing of the caller's terminal or
	# pipes, what it says in run/NAME/qemu.log
	[ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ]
	[ "$(readlink "/proc/$pid/fd/0")" = /dev/null ]
	[ "$(readlink "/proc/$pid/fd/1")" = "$T/run/web-1/qemu.log" ]
	[ "$(readlink "/proc/$pid/fd/2")" = "$T/run/web-1/qemu.log" ]
	# vmrun -d returns only once QEMU's main loop runs: QMP answers a
	# command at once
	run python3 - "$T/run/web-1" <<-'PY'
	import os, socket, sys
	os.chdir(sys.argv[1])
	s = socket.socket(socket.AF_UNIX)
	s.settimeout(1)
	s.connect("qmp.sock")
	f = s.makefile("rwb")
	assert b'"QMP"' in f.readline()
	f.write(b'{"execute":"qmp_capabilities"}\n'); f.flush()
	assert f.readline().startswith(b'{"return"')
	f.write(b'{"execute":"query-status"}\n'); f.flush()
	print(f.readline().decode().strip())
	PY
	assert_success
	assert_output --partial '"running": true'
	vmrun -q stop -t 5 web-1
	# a network mode vmrun cannot give is refused
	sed -i 's/mode: nat/mode: bridge/' slicer-mac.yaml
	run_split vmrun -g web -A tcg --kernel "$G/amd64/vmlinuz" --disk web-1.img
	assert_refused 78 "network mode 'bridge'"
}

@test "a QEMU that cannot start: its own message, 69, kept in qemu.log, nothing running" {
	disk amd64 big
	# (QEMU finds this only while it sets the machine up: an initrd
	# larger than the guest's memory)
	truncate -s 200M big.initrd
	run_split vmrun -d -A tcg --mem 128M --kernel "$G/amd64/vmlinuz" --initrd big.initrd --disk big.img
	assert_failure 69
	[ -z "$output" ]
	[[ $stderr == *"initrd is too large"* ]] || fail "QEMU's message missing: $stderr"
	[[ $(tail -1 <<< "$stderr") == "vmrun: QEMU could not start VM big "* ]]
	grep -q "initrd is too large" run/big/qemu.log
	run vmrun ls
	assert_success
	refute_output --partial '"big"'
	! pgrep -f "qemu-system-x86_64 -name big " > /dev/null || false
	# and the disk is free again
	run_split vmrun -d -A tcg --mem 512M --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk big.img -a vmstrap.mode=stay
	assert_ok
	vmrun -q stop -t 5 big
}

@test "-d with stdin and stderr closed: QEMU still gets its own descriptors right" {
	disk amd64 shut
	run vmrun -q -d -A tcg --mem 512M --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk shut.img -a vmstrap.mode=stay <&- 2>&-
	assert_success
	pid=$(jq -r .vm.pid <<< "$output")
	[ "$(readlink "/proc/$pid/fd/0")" = /dev/null ]
	[ "$(readlink "/proc/$pid/fd/1")" = "$T/run/shut/qemu.log" ]
	[ "$(readlink "/proc/$pid/fd/2")" = "$T/run/shut/qemu.log" ]
	[[ $(readlink "/proc/$pid/fd/3") == socket:* ]]
	vmrun -q stop -t 5 shut
	# and QEMU wrote nothing into the guest's console
	! grep -q qemu-system run/shut/console.log || false
}

# fg_vm NAME MODE [OPTION...]: start the test guest on NAME.img with vmrun
# in the foreground, as a background job (stdout in ./out, stderr in ./err),
# its pid in FG_PID; return once its console says MODE's first words.
fg_vm() {
	local name=$1 mode=$2 says
	shift 2
	vmrun -q -A tcg --mem 512M --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk "$name.img" -a "vmstrap.mode=$mode" "$@" > out 2> err 8>&- &
	FG_PID=$!
	case $mode in
	write) says="vmstrap-guest: writing" ;;
	*) says="vmstrap-guest: up $name" ;;
	esac
	wait_console "$name" "$says"
}

@test "SIGTERM in the foreground powers the guest off cleanly first" {
	disk amd64 fg
	fg_vm fg stay
	pid=$FG_PID
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 143 ] || fail "exit status $rc: $(cat err)"
	[ ! -s out ]
	grep -q "power button: powering off" run/fg/console.log
	e2fsck -fn fg.img > /dev/null
}

@test "the vm section's keys are the ones vmstrap(7) and vmrun(1) document" {
	disk amd64 keys
	boot amd64 keys -q -A tcg
	assert_ok
	local code seven one
	code=$(jq -r '.vm | keys_unsorted | .[]' <<< "$output")
	seven=$(awk '/^\.Ss vm$/ {f=1; next} f && /^\.S[sh] / {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmstrap.7")
	one=$(awk '/^section:$/ {f=1; next} f && /^\.El/ {f=0} f && /^\.It Li / {print $3}' "$VS_TOP/man/vmrun.1")
	[ "$code" = "$seven" ] || fail "code: $code; vmstrap.7: $seven"
	[ "$code" = "$one" ] || fail "code: $code; vmrun.1: $one"
}

@test "config: the configuration checked, as one JSON object; bad ones refused with where" {
	cat > slicer-mac.yaml <<-EOF
	config:
	  image: "127.0.0.1:5000/demo:1"
	  host_groups:
	    - name: web
	      count: 2
	      vcpu: 1
	      ram_gb: 1
	      storage_size: 5G
	      network: {mode: nat, gateway: 192.168.64.1/24}
	    - name: db
	      count: 0
	      storage_size: 10G
	EOF
	run_split vmrun config
	assert_ok
	[ "$(jq -r .image <<< "$output")" = 127.0.0.1:5000/demo:1 ]
	[ "$(jq -c '[.host_groups[] | [.name, .count, .storage_size]]' <<< "$output")" = '[["web",2,5368709120],["db",0,10737418240]]' ]
	[ "$(jq -r '.host_groups[0].ram' <<< "$output")" = 1073741824 ]
	[ "$(jq -r '.host_groups[0].network.mode' <<< "$output")" = nat ]
	run_split vmrun -c none.yaml config
	assert_refused 66 "none.yaml"
	mkdir empty
	run_split vmrun -C empty config
	assert_refused 66 "no slicer-mac.yaml here"
	sed -i 's/storage_size: 5G/storage_size: 4G/' slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:[0-9]+:[0-9]+: storage_size: size '4G' is too small"
	printf 'config:\n  host_groups: [\n' > slicer-mac.yaml
	run_split vmrun config
	assert_refused 78 "slicer-mac.yaml:[0-9]+:[0-9]+:"
}

@test "what QEMU would refuse is refused first; a comma in a path is a comma" {
	disk amd64 m
	run_split vmrun -A tcg --mem 99999T --kernel "$G/amd64/vmlinuz" --disk m.img
	assert_refused 64 "64M to 1T of memory"
	printf 'config:\n  host_groups:\n    - name: big\n      vcpu: 300\n      storage_size: 5G\n' > slicer-mac.yaml
	run_split vmrun -g big -A tcg --kernel "$G/amd64/vmlinuz" --disk m.img
	assert_refused 78 "group big: a VM has 1 to 256 CPUs"
	rm slicer-mac.yaml
	[ ! -e run ]
	run_split vmrun <<< '{"kernel": {"path": "'"$G/amd64/vmlinuz"'", "initrd": 7}, "disk": {"path": "'"$T/m.img"'"}}'
	assert_refused 65 "kernel.initrd is not a path"
	run_split vmrun --kernel "$T" --disk m.img
	assert_refused 65 "is not a file"
	# a path with a comma: QEMU must not read "readonly=on" as an option
	mv m.img 'm,readonly=on.img'
	run_split vmrun -q -A tcg --mem 512M -n comma --kernel "$G/amd64/vmlinuz" --initrd "$G/amd64/initrd.img" --disk 'm,readonly=on.img'
	assert_ok
	grep -q "vmstrap-guest: up comma boot 1" run/comma/console.log
	[ "$(debugfs -R 'cat /var/lib/vmstrap/booted' 'm,readonly=on.img' 2>/dev/null)" = "comma boot 1" ]
}

@test "a guest that resets is not a clean power-off; a second stop signal stops at once" {
	disk amd64 r
	fg_vm r stay
	pid=$FG_PID
	python3 -c '
import socket, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for c in ("qmp_capabilities", "system_reset"):
    f.write(json.dumps({"execute": c}) + "\n"); f.flush(); f.readline()' run/r/qmp.sock
	rc=0
	wait "$pid" || rc=$?
	[ "$rc" -eq 65 ] || fail "status $rc: $(cat err)"
	grep -q "VM r reset instead of powering off" err
	[ ! -s out ]
	# two stops (SIGTERM: a background job of a script ignores SIGINT,
	# and vmrun leaves an ignored signal ignored): the second does not
	# wait for the guest
	fg_vm r write -t 60
	pid=$FG_PID
	kill -TERM "$pid"
	sleep 0.3
	start=$SECONDS
	kill -TERM "$pid"
	rc=0
	wait "$pid" || rc=$?
	[ $((SECONDS - start)) -lt 10 ] || fail "the second SIGTERM waited $((SECONDS - start)) s"
	[ "$rc" -ne 0 ]
}
