"""Training data: built-in real sets, local files and datasets folders, normalised to the
conversational prompt/completion form that TRL's SFTTrainer trains with completion-only loss.

A normalised record:
    {"id": "row-17", "prompt": [{"role": "user", "content": ...}, ...],
     "completion": [{"role": "assistant", "content": ...}]}

Accepted row formats (detected per row):
- `prompt` + `completion` (strings or message lists); `prompt` + `response`, the built-in sets' own
  rows (`qtuning.data.builtin`), reads the same way;
- `messages` (a conversation; the last assistant message is the completion, the rest the prompt;
  EVERY assistant turn carries a loss, as with TRL's assistant-only loss: such records are tokenised
  here, each assistant turn's tokens labelled, every other token at -100);
- Alpaca `instruction` (+ optional `input`) + `output`.
Malformed rows raise a DataError naming the file, the row and the field. Rows whose response is
empty are counted, reported and skipped; rows longer than max_length are truncated and counted.

Rows are numbered from 0 in file order (in JSONL, blank lines are not rows; errors about a line's
text also give its 1-based line number). What happens to odd input, on purpose (tests/test_fuzz_data.py
tries each kind; every refusal is a DataError, a QTuningError, whose one-line message names the file,
and the row and field where a row is at fault):
- a UTF-8 byte order mark: accepted (at the start of a .json file or of any JSONL line);
- bytes that are not UTF-8: refused, naming the line (and, in JSONL, the row);
- a line of a JSONL file that is not JSON: refused, naming the row and line; when it is the last line
  and has no line end (a file cut short while written), the message says so: nothing is skipped
  silently, since a truncated file usually means more rows are missing;
- a key twice in one object (`{"output": "a", "output": "b"}`): refused, naming the row and the key
  (JSON parsers keep the last value silently; which one was meant is not knowable);
- JSON nested deeper than the parser's limit, integers over Python's 4,300-digit limit: refused;
- text with a lone surrogate (a `\\ud800` escape, which no UTF-8 file can hold): refused, naming the field;
- wrong types (a number, null, a list or an object where text is expected; a message without a
  non-empty string role and a string content): refused, naming the row and the field (an `id` may be a string or a number; null
  or absent gives `row-N`); unknown extra fields are ignored;
- an empty or whitespace-only response: the row is skipped and listed in the DataReport; if every row
  is skipped, refused; 100,000-character (or longer) fields load as they are (max_length truncates them);
- chat messages (a `messages` list, or `prompt` + `completion` message lists taken together): the
  last must be an assistant message and the first must not be one (an assistant turn is trained as an
  answer, so something must come before it); other orders (two user turns in a row, a system message
  later on) are passed to the chat template, and a template that refuses one raises a DataError
  naming the file and row when the record is tokenised;
- Parquet or a `datasets` save_to_disk folder with missing columns: refused like a row without them
  (row 0 names the fields it has); extra columns are ignored; a file that is not Parquet, a folder
  that is not a save_to_disk folder (or a DatasetDict without a 'train' split): refused; a saved
  dataset of 0 rows (which `datasets` writes without a data file and cannot load back): "no rows";
  of a DatasetDict only the train split is read;
- a .json file whose top level is not a list (or an object holding exactly one list): refused;
- an empty file (or only whitespace) of any type, or no rows: refused ("no rows");
- a path that cannot be read (permissions): refused, naming it.

A row may carry a static token mask (what `qtuning select` writes): `qtuning_token_keep`, a list
of 0/1, one per response token (the tokens whose label is set, after the first position) of the
untruncated tokenisation with the tokenizer named in `qtuning_token_keep_model`; a 0 sets that
token's label to -100 (it stays in the input as context). Such records get a `token_keep` key,
and `to_dataset` then tokenises every record itself (input_ids + labels) so that TRL keeps them.
"""

from ..errors import DataError
from .reading import read_rows
from .records import (
    MASK_FIELD,
    MASK_MODEL_FIELD,
    DataReport,
    Record,
    load_records,
    normalise_row,
    split_records,
)
from .tokens import collate, count_truncation, is_multi_turn, to_dataset, tokenize_record

__all__ = [
    "MASK_FIELD",
    "MASK_MODEL_FIELD",
    "DataError",
    "DataReport",
    "Record",
    "collate",
    "count_truncation",
    "is_multi_turn",
    "load_records",
    "normalise_row",
    "read_rows",
    "split_records",
    "to_dataset",
    "tokenize_record",
]
