"""Library messages name parameters; `aarm-export` shows them as flags (export/help_format.py)."""

from export.help_format import command_words, flag_words


def test_a_commands_own_option_becomes_its_flag():
    flags = {"force": "--force", "clips": "--clips", "rtol": "--rtol"}
    assert flag_words("out.json exists; pass `force` to overwrite it", flags) == \
        "out.json exists; pass --force to overwrite it"
    # LIBRARY_NAMES: the library's name differs from the option's
    assert flag_words("`num_clips` must be >= 1", flags) == "--clips must be >= 1"
    assert flag_words("tolerance `max_rel` must be > 0", flags) == "tolerance --rtol must be > 0"
    assert flag_words("`max_rel` > 0", {"max_rel": "--max-rel"}) == "--max-rel > 0"  # its own option first
    # not an option of this command, nor set elsewhere: the parameter stays as it is
    assert flag_words("pass `resume` to continue", flags) == "pass `resume` to continue"


def test_a_hint_about_another_command_gets_that_commands_words():
    message = "m.onnx has no attention outputs; export it with `attention_outputs`"
    assert flag_words(message, {"force": "--force"}).endswith("; export it with --attention-outputs")
    # the running command's own option wins over what another command calls it
    assert flag_words("`kernels`", {"kernels": "-k"}) == "-k"


def test_a_printed_note_outside_a_command_keeps_the_parameter():
    assert command_words("pass `eval_data` with labelled clips") == "pass `eval_data` with labelled clips"
