;; Grows its memory one page (64 KiB) at a time, touching each page, with no declared maximum; when a grow
;; fails it traps (like a C/Rust allocator aborting). Under a memory cap this must end as 'oom'.
(module
  (memory (export "memory") 1)
  (func (export "_start") (local $pages i32)
    (loop $grow
      (local.set $pages (memory.grow (i32.const 1)))
      (if (i32.eq (local.get $pages) (i32.const -1)) (then unreachable))
      (i32.store (i32.mul (local.get $pages) (i32.const 65536)) (i32.const 1))
      (br $grow))))
