;; Valid, but imports a function no WASI host provides: instantiation fails (a link error) before it starts.
(module
  (import "env" "not_provided" (func $missing))
  (memory (export "memory") 1)
  (func (export "_start") (call $missing)))
