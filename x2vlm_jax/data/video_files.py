"""Where the official video datasets keep a video's frames (plain Python, shared by the tf.data
builders and the tensorflow-free evaluators): one JSON file of base64 frames per video, named by
`pattern` with `{id}` = the video id and `{num}` = its digits — MSRVTT "video7010" →
"video_{num}.json" → video_7010.json (official VQA_msrvtt), MSVD "{id}.json"."""

import re


def video_file_name(video_id, pattern: str = "{id}.json") -> str:
  digits = re.sub(r"\D", "", str(video_id))
  return pattern.format(id=video_id, num=int(digits) if digits else video_id)
