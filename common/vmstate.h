/* vmstate.h: what vmrun keeps about each VM in a workspace, and what is
 * true of it now.
 *
 *   run/NAME/vm.json      the VM's record (the vm section, plus disk,
 *                         kernel, and the state it was last left in)
 *   run/NAME/qemu.pid     QEMU's pid file: QEMU holds a lock on it while
 *                         it runs and removes it when it exits cleanly
 *   run/NAME/console.log  everything the guest printed on its console
 *   run/NAME/qmp.sock     QEMU's QMP socket
 *
 * A record is never trusted alone: a VM is running only while its pid file
 * is locked (so a reused pid is not taken for it), crashed when the pid
 * file is left behind unlocked (QEMU was killed) or its console ends in a
 * kernel panic, and stopped otherwise. */
#ifndef VS_VMSTATE_H
#define VS_VMSTATE_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

#define VM_RUN_DIR "run"

enum vm_state { VM_STOPPED, VM_RUNNING, VM_CRASHED };

struct vm_info {
	char *name;
	char *dir;		/* run/NAME, as given */
	json_t *rec;		/* vm.json, or an empty object */
	enum vm_state state;
	pid_t pid;		/* when running, else 0 */
	char why[160];		/* crashed: how it is known */
};

const char *vm_state_name(enum vm_state s);

/* Look at VM name in workspace run directory rundir.  Returns 0, or -1
 * with e set (EX_NOINPUT when there is no such VM). */
int vmstate_get(const char *rundir, const char *name, struct vm_info *vi,
    struct vs_err *e);

/* The running VM of rundir whose disk is disk (compared by device and
 * inode), or none: returns 1 and fills vi, 0, or -1 with e set. */
int vmstate_holder(const char *rundir, const char *disk, struct vm_info *vi,
    struct vs_err *e);

/* Who holds the image file path (open as fd): a running VM of the
 * workspace in the current directory (named), or another program with a
 * lock on it (QEMU takes them; so does a writer with flock(2)).  Writes a
 * description into who and returns 1, or 0 when nobody does. */
int vmstate_who(int fd, const char *path, char *who, size_t n);

/* The names of the VMs in rundir, sorted, NULL-terminated, malloc'd (an
 * empty list when rundir does not exist); NULL with e set on failure. */
char **vmstate_names(const char *rundir, struct vs_err *e);
void vmstate_free_names(char **names);

void vmstate_free(struct vm_info *vi);

/* Does the tail of a console log hold what? */
bool vmstate_console_says(const char *console, const char *what);

/* The last kernel panic line in the tail of a console log, or false. */
bool vmstate_panic(const char *console, char *line, size_t n);

#endif
