;; State-leak probe for the worker pool. Exits 3 when its linear memory or a mutable global is not in its
;; initial state at start (an instance or its memory survived an earlier task), 4 when /scratch/leak.txt already
;; exists (scratch survived), 5 on any other error creating it; otherwise echoes the first byte of stdin to
;; stdout and exits with that byte's value (0 for empty stdin). The file is left open on purpose: the executor
;; must close what a task leaves open.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $ran (mut i32) (i32.const 0))
  (data (i32.const 256) "leak.txt")
  (func (export "_start") (local $err i32)
    (if (i32.load (i32.const 1024)) (then (call $proc_exit (i32.const 3))))
    (if (global.get $ran) (then (call $proc_exit (i32.const 3))))
    (i32.store (i32.const 1024) (i32.const 0xdead))
    (global.set $ran (i32.const 1))
    ;; create leak.txt exclusively (oflags creat|excl = 1|4, rights fd_write = 64); EEXIST is errno 20
    (local.set $err (call $path_open (i32.const 3) (i32.const 0) (i32.const 256) (i32.const 8)
      (i32.const 5) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 0)))
    (if (i32.eq (local.get $err) (i32.const 20)) (then (call $proc_exit (i32.const 4))))
    (if (local.get $err) (then (call $proc_exit (i32.const 5))))
    ;; read at most one byte of stdin to 512 and write back what was read
    (i32.store (i32.const 16) (i32.const 512))
    (i32.store (i32.const 20) (i32.const 1))
    (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))
    (i32.store (i32.const 20) (i32.load (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))
    (call $proc_exit (i32.load8_u (i32.const 512)))))
