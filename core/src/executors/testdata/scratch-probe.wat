;; Scratch isolation probe for reused worker dirs. Unless argv[1] is n, checks first that /scratch is empty (exit
;; 4 when it is not, 5 when it cannot be listed) and that stdin (fd 0) is not in append mode (exit 6), then acts
;; on argv[1]:
;;   n  nothing at all: no WASI call that could leave a trace (exit 0)
;;   c  nothing more (exit 0; listing /scratch counts as touching it, for its atime)
;;   l  litters /scratch: a subdir with a file in it, a file left open, a symlink to the subdir and a dangling
;;      one (exit 7 when any of that fails, else 0; node's WASI refuses symlinks that point out of /scratch)
;;   t  litters like l, then traps
;;   k  litters like l, prints "ready\n", then spins forever (to be killed mid-run)
;;   f  sets the append flag on fd 0 (/dev/null when stdin is empty) and exits 0 (8 when that fails)
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory"
    (func $path_create_directory (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "sub")
  (data (i32.const 272) "sub/f.txt")
  (data (i32.const 288) "top.txt")
  (data (i32.const 304) "link")
  (data (i32.const 336) "dangle")
  (data (i32.const 352) "gone")
  (data (i32.const 368) "ready\n")
  (func $create (param $path i32) (param $len i32)
    ;; oflags creat|excl, rights fd_write; the fd is left open
    (if (call $path_open (i32.const 3) (i32.const 0) (local.get $path) (local.get $len)
          (i32.const 5) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12))
      (then (call $proc_exit (i32.const 7)))))
  (func $litter
    (if (call $path_create_directory (i32.const 3) (i32.const 256) (i32.const 3))
      (then (call $proc_exit (i32.const 7))))
    (call $create (i32.const 272) (i32.const 9))
    (call $create (i32.const 288) (i32.const 7))
    (if (call $path_symlink (i32.const 256) (i32.const 3) (i32.const 3) (i32.const 304) (i32.const 4))
      (then (call $proc_exit (i32.const 7))))
    (if (call $path_symlink (i32.const 352) (i32.const 4) (i32.const 3) (i32.const 336) (i32.const 6))
      (then (call $proc_exit (i32.const 7)))))
  (func (export "_start") (local $mode i32)
    ;; mode = first byte of argv[1] ('c' when there is none)
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (local.set $mode (i32.const 99))
    (if (i32.ge_u (i32.load (i32.const 0)) (i32.const 2))
      (then
        (drop (call $args_get (i32.const 64) (i32.const 1024)))
        (local.set $mode (i32.load8_u (i32.load (i32.const 68))))))
    (if (i32.eq (local.get $mode) (i32.const 110)) (then (call $proc_exit (i32.const 0)))) ;; n
    ;; /scratch (fd 3) must list nothing (libuv leaves out . and ..)
    (if (call $fd_readdir (i32.const 3) (i32.const 8192) (i32.const 1024) (i64.const 0) (i32.const 8))
      (then (call $proc_exit (i32.const 5))))
    (if (i32.load (i32.const 8)) (then (call $proc_exit (i32.const 4))))
    ;; fdstat.fs_flags (u16 at offset 2) of stdin: no append (WASI's bit 1; node's uvwasi passes Linux's raw
    ;; fcntl flags through, where O_APPEND is 0x400)
    (if (call $fd_fdstat_get (i32.const 0) (i32.const 32)) (then (call $proc_exit (i32.const 6))))
    (if (i32.and (i32.load16_u (i32.const 34)) (i32.const 0x401)) (then (call $proc_exit (i32.const 6))))
    (if (i32.eq (local.get $mode) (i32.const 102)) ;; f
      (then
        (if (call $fd_fdstat_set_flags (i32.const 0) (i32.const 1)) (then (call $proc_exit (i32.const 8))))
        (call $proc_exit (i32.const 0))))
    (if (i32.or (i32.eq (local.get $mode) (i32.const 108)) ;; l, t, k
          (i32.or (i32.eq (local.get $mode) (i32.const 116)) (i32.eq (local.get $mode) (i32.const 107))))
      (then (call $litter)))
    (if (i32.eq (local.get $mode) (i32.const 116)) (then unreachable))
    (if (i32.eq (local.get $mode) (i32.const 107))
      (then
        (i32.store (i32.const 400) (i32.const 368))
        (i32.store (i32.const 404) (i32.const 6))
        (drop (call $fd_write (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 408)))
        (loop $forever (br $forever))))
    (call $proc_exit (i32.const 0))))
