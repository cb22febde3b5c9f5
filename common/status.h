/* status.h: the exit statuses of every vmstrap tool, in one table.
 *
 * They are <sysexits.h>'s, so that a script can tell "fix your command line"
 * from "bad input" from "try again later" from "this machine failed".  Every
 * man page's EXIT STATUS section repeats this table.
 *
 *   0  EX_OK           success
 *  64  EX_USAGE        bad command line: unknown flag, bad size, missing operand
 *  65  EX_DATAERR      bad input data: pipeline document, image, filesystem
 *  66  EX_NOINPUT      an input file does not exist or cannot be read
 *  69  EX_UNAVAILABLE  a program or service that is needed is not there
 *  70  EX_SOFTWARE     internal error (a bug: please report it)
 *  71  EX_OSERR        the system failed: out of memory, fork, exec
 *  73  EX_CANTCREAT    an output cannot be created, or exists and is kept
 *  74  EX_IOERR        read or write failed: disk full, I/O error, closed pipe
 *  75  EX_TEMPFAIL     busy: try again later (a file is in use by a VM)
 *  77  EX_NOPERM       not allowed
 *  78  EX_CONFIG       bad configuration file
 *
 * imgcheck(1) instead reports the filesystem's state with e2fsck's low bits
 * (0 clean, 1 errors corrected, 4 errors left uncorrected).
 */
#ifndef VS_STATUS_H
#define VS_STATUS_H

#include <sysexits.h>

#endif
