"""Protocol tests of `arwkv-kernel`, driven by jupyter_client (run by tests/kernel/run.sh).

* The full `jupyter_kernel_test` suite with every attribute set, and the iopub-welcome test.
* Our own: live displays (display_data, throttled update_display_data ending on the final state,
  clear_output), a message with a bad signature is ignored, stop_on_error aborts queued cells, a
  panic is an error that keeps earlier variables, an interrupt that the cell honours keeps its state,
  one it ignores kills the evaluation process after the grace period and the next cell still works.

The whole file runs with ARWKV_KERNEL_NO_PRELUDE=1 (a plain Rust kernel); the display marker lines
are printed by hand, exactly as `arwkv::notebook` prints them. tests/kernel/run.sh then runs it
again against the kernel as users get it, the `arwkv` prelude loaded, at the suite's own timeouts.
"""

import json
import os
import time
import unittest

import jupyter_kernel_test
from jupyter_client.manager import start_new_kernel

from tests.kernel import cells

KERNEL = os.environ.get("ARWKV_KERNEL_NAME", "arwkv")
TIMEOUT = 60


def marker(op, ident, html, text):
    msg = {"op": op, "id": ident, "data": {"text/html": html, "text/plain": text}}
    # A Rust string literal holding the marker line.
    return "ARWKV_KERNEL_DISPLAY " + json.dumps(msg)


def rust_print(line):
    return "println!(\"{}\", " + json.dumps(line) + ");"


class ArwkvKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL
    language_name = "rust"
    file_extension = ".rs"
    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("written to stderr");'
    completion_samples = [{"text": "std::collections::BTreeSe", "matches": {"BTreeSet"}}]
    complete_code_samples = ["1 + 1", "let x = 1;", "fn f() {}", ":dep itoa = \"1\""]
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", "let s = \"open"]
    invalid_code_samples = ["let x = 1 }", ")"]
    code_generate_error = 'let x: u32 = "not a number";'
    code_execute_result = [{"code": "6 * 7", "result": "42"}]
    code_display_data = [{"code": rust_print(marker("display", "t-1", "<b>x</b>", "x")), "mime": "text/html"}]
    code_history_pattern = "6 *"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "std::vec::Vec"
    code_clear_output = rust_print('ARWKV_KERNEL_DISPLAY {"op": "clear", "id": "", "data": {}}')


class IopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = KERNEL
    support_iopub_welcome = True


def wait_for_stream(kc, msg_id, text, timeout=TIMEOUT):
    """Waits until cell msg_id has written text to a stream."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            if text in msg["content"]["text"]:
                return
    raise AssertionError(f"cell never printed {text!r}")


def run_cell(kc, code, timeout=TIMEOUT, **kw):
    return cells.run_cell(kc, code, timeout, **kw)


class ArwkvKernelBehaviour(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.km, cls.kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        cls.kc.stop_channels()
        cls.km.shutdown_kernel(now=True)

    def test_execution_counts_start_at_one_and_panics_are_errors_that_keep_variables(self):
        km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=TIMEOUT)
        try:
            reply, _ = run_cell(kc, "let kept = 41;")
            self.assertEqual(reply["execution_count"], 1)
            reply, outputs = run_cell(kc, 'let lost = 1; panic!("boom {}", kept);')
            self.assertEqual(reply["status"], "error")
            self.assertEqual(reply["ename"], "panic")
            self.assertIn("boom 41", "\n".join(reply["traceback"]))
            self.assertIn("error", [m["msg_type"] for m in outputs])
            reply, outputs = run_cell(kc, "kept + 1")
            self.assertEqual(reply["status"], "ok")
            result = [m for m in outputs if m["msg_type"] == "execute_result"]
            self.assertEqual(result[0]["content"]["data"]["text/plain"], "42")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    def test_live_display_updates_are_throttled_and_end_on_the_final_state(self):
        lines = [marker("display", "live-1", "<i>0</i>", "0")]
        lines += [marker("update", "live-1", f"<i>{i}</i>", str(i)) for i in range(1, 30)]
        code = "\n".join(rust_print(l) + " std::thread::sleep(std::time::Duration::from_millis(20));" for l in lines)
        reply, outputs = run_cell(self.kc, code)
        self.assertEqual(reply["status"], "ok")
        kinds = [m["msg_type"] for m in outputs]
        self.assertEqual(kinds.count("display_data"), 1)
        updates = [m for m in outputs if m["msg_type"] == "update_display_data"]
        self.assertTrue(1 <= len(updates) < 29, f"{len(updates)} updates for 29 requests (≤ 5 Hz)")
        self.assertEqual(updates[-1]["content"]["data"]["text/plain"], "29")
        self.assertEqual(updates[-1]["content"]["transient"]["display_id"], "live-1")
        self.assertNotIn("ARWKV_KERNEL_DISPLAY", json.dumps([m["content"] for m in outputs if m["msg_type"] == "stream"]))

    def test_a_message_with_a_bad_signature_is_ignored(self):
        session = self.kc.session
        good_key = session.key
        session.key = b"not-the-key"
        session.auth = __import__("hmac").HMAC(session.key, digestmod=session.digest_mod)
        try:
            bad = session.msg("kernel_info_request", {})
            self.kc.shell_channel.send(bad)
        finally:
            session.key = good_key
            session.auth = __import__("hmac").HMAC(good_key, digestmod=session.digest_mod)
        with self.assertRaises(Exception):
            self.kc.get_shell_msg(timeout=2)
        self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        self.assertEqual(reply["msg_type"], "kernel_info_reply")

    def test_stop_on_error_aborts_the_cells_queued_behind_the_error(self):
        ids = [self.kc.execute('let broken: u32 = "x";'), self.kc.execute("1 + 1"), self.kc.execute("2 + 2")]
        replies = {}
        while len(replies) < 3:
            r = self.kc.get_shell_msg(timeout=TIMEOUT)
            replies[r["parent_header"]["msg_id"]] = r["content"]["status"]
        self.assertEqual([replies[i] for i in ids], ["error", "aborted", "aborted"])
        reply, _ = run_cell(self.kc, "3 + 3")
        self.assertEqual(reply["status"], "ok")

    def test_a_polled_interrupt_keeps_the_state_and_an_ignored_one_kills_after_the_grace(self):
        run_cell(self.kc, "let mut steps = 0u64;")
        code = (
            'let flag = std::env::var("ARWKV_KERNEL_INTERRUPT_FILE").unwrap();\n'
            'println!("polling");\n'
            "while !std::path::Path::new(&flag).exists() { steps += 1; "
            "std::thread::sleep(std::time::Duration::from_millis(10)); }\n"
            'println!("stopped after {steps} steps");'
        )
        msg_id = self.kc.execute(code)
        # Interrupt once the loop runs (compiling the cell takes longer with the prelude loaded).
        wait_for_stream(self.kc, msg_id, "polling")
        time.sleep(0.5)
        self.km.interrupt_kernel()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        self.assertEqual(reply["parent_header"]["msg_id"], msg_id)
        self.assertEqual(reply["content"]["status"], "ok")
        reply, outputs = run_cell(self.kc, "steps > 0")
        result = [m for m in outputs if m["msg_type"] == "execute_result"]
        self.assertEqual(result[0]["content"]["data"]["text/plain"], "true")

        msg_id = self.kc.execute(
            'println!("looping"); loop { std::thread::sleep(std::time::Duration::from_millis(50)); }'
        )
        wait_for_stream(self.kc, msg_id, "looping")
        self.km.interrupt_kernel()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        self.assertEqual(reply["content"]["status"], "error")
        reply, _ = run_cell(self.kc, "1 + 1")
        self.assertEqual(reply["status"], "ok")


if __name__ == "__main__":
    unittest.main()
