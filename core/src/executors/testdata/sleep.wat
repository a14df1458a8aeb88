;; Sleeps for 1 s (poll_oneoff on a relative monotonic clock: no CPU used, no file touched), then exits 0.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; One 48-byte subscription at 0: userdata (8), tag 0 = clock (1 + padding to 16), clock id 1 = monotonic
    ;; (4 + padding to 24), timeout in ns (8), precision (8), flags 0 = relative (2). Memory starts zeroed.
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000))
    ;; The event (32 bytes) goes to 64, the number of events to 128.
    (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
