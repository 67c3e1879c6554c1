"""The scenarios of issue 22 by class (what broke at e64e0cb), each with the test that covers it now.

`python -m benchmarks.hardening_scenarios` prints the table and the count per class; `--run` also runs every
listed test with pytest and counts, per class, the scenarios whose tests all pass (slow: makes tiny exports).
A scenario with no test here says why (fixed elsewhere, or not fixable and documented). Before (e64e0cb): the
issue's attack run, 454 scenarios tried, these failing; the count of raw tracebacks there was "about 35" because
one scenario (e.g. 300-character names) raised in several commands.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_LOSS, ONE_FAILS_OTHERS, ACCEPTED_WRONG, TRACEBACK = ("data loss", "one client fails others",
                                                          "accepted but wrong", "raw traceback")
OW, TR, LIM, ISO = ("tests/bt_export/test_overwrite.py", "tests/bt_serve/test_triton_repo_overwrite.py",
                    "tests/bt_runtime/test_limits.py", "tests/bt_serve/test_isolation.py")
HARD, IDX = "tests/bt_runtime/test_hardening.py", "tests/bt_runtime/test_index_hardening.py"

# (class, scenario, [test node ids] or a reason string when no test of this branch covers it)
SCENARIOS: list[tuple[str, str, list[str] | str]] = [
    (DATA_LOSS, "bt-export --overwrite deletes user files in ort_tensorrt_cache/",
     [f"{OW}::test_user_files_inside_the_ort_tensorrt_cache_are_refused"]),
    (DATA_LOSS, "bt-export --overwrite deletes a user directory where a listed file's name is",
     [f"{OW}::test_a_directory_where_a_listed_file_was_is_refused"]),
    (DATA_LOSS, "bt-export -o SYMLINK --overwrite turns the link into a directory, stray .NAME.old-*",
     [f"{OW}::test_a_symlinked_output_is_refused_before_any_work"]),
    (DATA_LOSS, "triton-repo --overwrite deletes user files inside a model folder",
     [f"{TR}::test_a_user_file_inside_a_model_folder_is_refused"]),
    (DATA_LOSS, "triton-repo --overwrite deletes edits to config.pbtxt", [f"{TR}::test_an_edited_config_is_refused"]),
    (ONE_FAILS_OTHERS, "La TIFF merged by the batcher fails 108 of 140 good requests",
     [f"{ISO}::test_an_associated_alpha_tiff_is_answered_like_the_runtime_and_fails_no_one",
      f"{LIM}::test_grayscale_tiff_with_associated_alpha_is_composited_on_white"]),
    (ONE_FAILS_OTHERS, "64 MB text tokenized before truncation (3+ min, +3.5 GB)",
     [f"{ISO}::test_a_64_mb_text_is_that_rows_error_in_milliseconds",
      f"{LIM}::test_a_64_mb_text_is_refused_in_milliseconds",
      "tests/bt_serve/test_gate.py::test_grpc_refuses_an_oversized_message_before_tritonserver_sees_it",
      "tests/bt_serve/test_gate.py::test_http_refuses_oversized_bodies_without_forwarding_them",
      "tests/bt_serve/test_server.py::test_smoke_round_trips_every_model_over_http_and_grpc"]),
    (ONE_FAILS_OTHERS, "every Pillow format enabled (EPS → Ghostscript)",
     [f"{LIM}::test_formats_outside_the_allow_list_never_reach_their_plugin"]),
    (ONE_FAILS_OTHERS, "FIFO named *.png hangs index / retrieve --images",
     [f"{LIM}::test_a_fifo_named_png_is_refused_by_name_never_opened", f"{LIM}::test_bt_run_gallery_refuses_a_fifo"]),
    (ONE_FAILS_OTHERS, "bt-serve binds 0.0.0.0 by default", [f"{ISO}::test_bt_serve_binds_loopback_unless_told"]),
    (ONE_FAILS_OTHERS, "PyTriton's access token on tritonserver's command line",
     "not fixable in bt-serve (tritonserver reads it only from argv); documented in docs/limits.md"),
    (ONE_FAILS_OTHERS, "a taken HTTP port waits 121 s", [f"{ISO}::test_a_taken_port_is_named_at_once"]),
    (ACCEPTED_WRONG, "verify passes with golden.tensors: []",
     ["tests/bt_runtime/test_golden.py::test_verify_refuses_empty_or_malformed_goldens_in_one_line"]),
    (ACCEPTED_WRONG, "tokenizer_config.json hashed but never checked",
     [f"{HARD}::test_a_tampered_tokenizer_config_is_refused_at_load"]),
    (ACCEPTED_WRONG, "graph re-pointed to external data named weights.bin loads unchecked",
     [f"{HARD}::test_a_graph_repointed_to_unlisted_external_data_is_refused"]),
    (ACCEPTED_WRONG, "index .npz with a 400 MB junk member fully decompressed",
     [f"{IDX}::test_a_large_junk_member_is_refused_before_decompressing",
      f"{IDX}::test_a_member_larger_than_its_header_says_is_refused"]),
    (ACCEPTED_WRONG, "fill_mask masks beyond truncation: fewer masks, no word (runtime and bt-serve)",
     [f"{HARD}::test_masks_beyond_truncation_are_an_error_not_fewer_masks",
      "tests/bt_serve/test_serve_hardening.py::test_fill_mask_beyond_truncation_is_the_requests_error"]),
    (ACCEPTED_WRONG, "preprocessing.alpha change not caught by verify",
     ["tests/bt_runtime/test_golden.py::test_verify_catches_a_changed_rule_on_the_suite"]),
    (ACCEPTED_WRONG, "fill_mask(top_k=True) accepted as 1", [f"{HARD}::test_top_k_must_be_an_integer_not_a_bool"]),
    (TRACEBACK, "bt-export from a cwd holding vision_tower.onnx.data (FileExistsError)",
     ["tests/bt_export/test_export_hardening.py::test_saving_external_data_ignores_the_working_directory"]),
    (TRACEBACK, "bt-export -o DANGLING_SYMLINK (after all the work)",
     [f"{OW}::test_a_symlinked_output_is_refused_before_any_work"]),
    (TRACEBACK, "300-character output names (bt-export, index, triton-repo)",
     [f"{OW}::test_a_300_character_output_name_is_one_line_up_front",
      f"{IDX}::test_index_output_paths_are_checked_before_any_work",
      f"{TR}::test_a_long_name_or_an_unwritable_parent_is_a_one_line_error"]),
    (TRACEBACK, "unwritable output for index / triton-repo (skipped when run as root)",
     [f"{IDX}::test_index_output_paths_are_checked_before_any_work",
      f"{TR}::test_a_long_name_or_an_unwritable_parent_is_a_one_line_error"]),
    (TRACEBACK, "triton-repo marker JSON corrupt or a list",
     [f"{TR}::test_a_corrupt_or_old_marker_is_a_one_line_error"]),
    (TRACEBACK, "crafted index arrays (2-D images, object arrays)",
     [f"{IDX}::test_crafted_images_arrays_are_refused_from_the_header"]),
    (TRACEBACK, "raw pickle stream as an index", [f"{IDX}::test_a_raw_pickle_stream_is_not_an_index"]),
    (TRACEBACK, "manifest tokenizer.max_length 100000 / pad id 99999 / image_size vs graph / output ../x / "
                "shortest_edge 1e9", [f"{HARD}::test_manifests_the_graphs_refuse_are_one_line_errors"]),
    (TRACEBACK, "verify with golden dtype foo/object, wrong shape, swapped file",
     [f"{HARD}::test_malformed_goldens_are_one_line_errors"]),
    (TRACEBACK, "every real verify mismatch printed 'internal error (a bug …)'",
     [f"{HARD}::test_a_verify_mismatch_says_mismatch_with_exit_code_1"]),
]
CLASSES = (DATA_LOSS, ONE_FAILS_OTHERS, ACCEPTED_WRONG, TRACEBACK)


def missing_tests() -> list[str]:
    """Listed test ids whose file or function does not exist (the table must not name tests that are gone)."""
    missing = []
    for _, _, tests in SCENARIOS:
        for node in tests if isinstance(tests, list) else []:
            file, function = node.split("::")
            path = ROOT / file
            if not path.is_file() or not re.search(rf"^def {function}\(", path.read_text(), re.MULTILINE):
                missing.append(node)
    return missing


def run_tests(nodes: list[str]) -> set[str]:
    """The node ids (parametrized ones folded to their function) that failed."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *nodes],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    return {re.sub(r"\[.*$", "", line.split()[1]) for line in result.stdout.splitlines()
            if line.startswith(("FAILED", "ERROR"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the listed tests and count what passes")
    args = parser.parse_args(argv)
    if missing := missing_tests():
        print(f"listed tests that do not exist: {missing}", file=sys.stderr)
        return 1
    failed = run_tests(sorted({n for _, _, t in SCENARIOS if isinstance(t, list) for n in t})) if args.run else set()
    before, covered, passing = Counter(), Counter(), Counter()
    print("| class | scenario | covered by |\n|---|---|---|")
    for kind, scenario, tests in SCENARIOS:
        before[kind] += 1
        if isinstance(tests, list):
            covered[kind] += 1
            passing[kind] += not any(t in failed for t in tests)
        shown = ", ".join(f"`{t.split('::')[1]}`" for t in tests) if isinstance(tests, list) else f"— {tests}"
        print(f"| {kind} | {scenario} | {shown} |")
    print("\n| class | failing at e64e0cb | covered by a test here |" +
          (" passing now |\n|---|---|---|---|" if args.run else "\n|---|---|---|"))
    for kind in CLASSES:
        print(f"| {kind} | {before[kind]} | {covered[kind]} |" + (f" {passing[kind]} |" if args.run else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
