;; Its start function (run by instantiation, before the worker reports the task started) never returns: only a
;; timeout or a cancel ends it.
(module
  (memory (export "memory") 1)
  (func $init (loop $forever (br $forever)))
  (start $init)
  (func (export "_start")))
