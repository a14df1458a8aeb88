;; Writes 4 KiB chunks forever: to stdout when run with no arguments, else to /scratch/fill.bin (preopen fd 3).
;; Ends only by an executor limit (output cap or scratch quota) or the timeout.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "fill.bin")
  (func (export "_start") (local $fd i32)
    (local.set $fd (i32.const 1))
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (if (i32.gt_u (i32.load (i32.const 0)) (i32.const 1))
      (then
        ;; create fill.bin (oflags creat|trunc, rights fd_write)
        (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 256) (i32.const 8)
          (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 8)))
        (local.set $fd (i32.load (i32.const 8)))))
    ;; iovec {buf=4096, len=4096}; the bytes there are zeros
    (i32.store (i32.const 16) (i32.const 4096))
    (i32.store (i32.const 20) (i32.const 4096))
    (loop $again
      (drop (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $again))))
