#!/usr/bin/env python3
"""A tiny scripted model API for recording real agent-CLI transcripts (see record-real.sh).

Not a model: it answers every request the same way. When the last user text contains
`write <file> <content>` and the request offers a file-writing or shell tool, the first reply is
one tool call doing that write; once a tool result is in the conversation, the reply is the text
"Wrote <file>.". Otherwise it replies "Hello.". Usage is fixed (50 in, 5 out, 20 cached).

Speaks, by path:
  POST /v1/chat/completions                      OpenAI chat completions, streamed (pi, opencode)
  POST /v1/responses                             OpenAI Responses API, streamed (codex)
  POST /v1/messages                              Anthropic Messages, streamed (claude)
  POST /v1beta/models/<m>:streamGenerateContent  Gemini API (gemini)
Usage: mock_model_api.py PORT   (binds 127.0.0.1)
"""
import json
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WRITE = re.compile(r"write (\S+) ([^\n]*)")


def texts(content):
    if isinstance(content, str):
        return content
    return " ".join(c.get("text", "") for c in content or [] if isinstance(c, dict))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_json({"object": "list", "data": [{"id": "mock-1", "object": "model"}], "models": []})

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        p = self.path
        if "count_tokens" in p or ":countTokens" in p:
            return self.send_json({"input_tokens": 10, "totalTokens": 10})
        if p.startswith("/v1/chat/completions"):
            return self.chat(body)
        if p.startswith("/v1/responses"):
            return self.openai_responses(body)
        if p.startswith("/v1/messages"):
            return self.anthropic(body)
        if p.startswith("/v1beta/models/"):
            return self.gemini(body, ":streamGenerateContent" in p)
        self.send_response(404)
        self.end_headers()

    # -- helpers
    def send_json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def sse(self, chunks):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for c in chunks:
            self.wfile.write(c.encode())
            self.wfile.flush()

    # -- OpenAI chat completions
    def chat(self, body):
        msgs = body.get("messages", [])
        user = " ".join(texts(m.get("content")) for m in msgs if m.get("role") == "user")
        done = any(m.get("role") == "tool" for m in msgs)
        tools = [t.get("function", {}).get("name") for t in body.get("tools", [])]
        tool = next((t for t in tools if t in ("write", "write_file", "Write")), None)
        w = WRITE.search(user)

        def chunk(delta, finish=None, usage=None):
            c = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": "mock-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                c["choices"], c["usage"] = [], usage
            return "data: " + json.dumps(c) + "\n\n"

        out = []
        if tool and w and not done:
            args = json.dumps({"path": w.group(1), "filePath": w.group(1), "file_path": w.group(1),
                               "content": w.group(2).strip()})
            out.append(chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_mock_1", "type": "function",
                                                                   "function": {"name": tool, "arguments": ""}}]}))
            out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}))
            out.append(chunk({}, "tool_calls"))
        else:
            text = f"Wrote {w.group(1)}." if (w and done) else "Hello."
            out += [chunk({"role": "assistant", "content": text}), chunk({}, "stop")]
        out.append(chunk({}, usage={"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55,
                                    "prompt_tokens_details": {"cached_tokens": 20}}))
        out.append("data: [DONE]\n\n")
        self.sse(out)

    # -- OpenAI Responses
    def openai_responses(self, body):
        items = body.get("input", [])
        user = " ".join(texts(i.get("content")) for i in items if i.get("role") == "user")
        done = any(i.get("type") in ("function_call_output", "custom_tool_call_output") for i in items)
        tools = {t.get("name") for t in body.get("tools", [])}
        w = WRITE.search(user)
        if w and not done and tools & {"shell", "exec_command"}:
            cmd = f"printf '{w.group(2).strip()}' > {w.group(1)}"
            name, args = ("exec_command", {"cmd": cmd}) if "exec_command" in tools else \
                ("shell", {"command": ["bash", "-lc", cmd]})
            item = {"type": "function_call", "id": "fc_mock_1", "call_id": "call_mock_1", "name": name,
                    "arguments": json.dumps(args), "status": "completed"}
        else:
            text = f"Wrote {w.group(1)}." if (w and done) else "Hello."
            item = {"type": "message", "id": "msg_mock_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
        usage = {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 5,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 55}

        def ev(o):
            return f"event: {o['type']}\ndata: {json.dumps(o)}\n\n"

        self.sse([ev({"type": "response.created", "response": {"id": "resp_mock"}}),
                  ev({"type": "response.output_item.done", "output_index": 0, "item": item}),
                  ev({"type": "response.completed", "response": {"id": "resp_mock", "usage": usage, "output": [item]}})])

    # -- Anthropic Messages
    def anthropic(self, body):
        msgs = body.get("messages", [])
        user = " ".join(texts(m.get("content")) for m in msgs if m.get("role") == "user")
        done = any(isinstance(m.get("content"), list) and any(c.get("type") == "tool_result" for c in m["content"])
                   for m in msgs)
        tools = [t.get("name") for t in body.get("tools", [])]
        m = re.search(r"working directory: ([^\s\\\"]+)", json.dumps(body.get("system", "")), re.I)
        cwd = m.group(1) if m else "/tmp"
        w = WRITE.search(user)
        usage = {"input_tokens": 50, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20}
        msg = {"id": "msg_mock", "type": "message", "role": "assistant", "model": body.get("model", "mock"),
               "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return self.send_json(dict(msg, content=[{"type": "text", "text": "Mock"}], stop_reason="end_turn"))
        if "Write" in tools and w and not done:
            block = {"type": "tool_use", "id": "toolu_mock_1", "name": "Write", "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(
                {"file_path": cwd + "/" + w.group(1), "content": w.group(2).strip()})}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": f"Wrote {w.group(1)}." if (w and done) else "Hello."}
            stop = "end_turn"

        def ev(name, data):
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        self.sse([ev("message_start", {"type": "message_start", "message": msg}),
                  ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
                  ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
                  ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
                  ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                       "usage": {"output_tokens": 5}}),
                  ev("message_stop", {"type": "message_stop"})])

    # -- Gemini API
    def gemini(self, body, stream):
        contents = body.get("contents", [])
        user = " ".join(p.get("text", "") for c in contents if c.get("role") == "user" for p in c.get("parts", []))
        done = any("functionResponse" in p for c in contents for p in c.get("parts", []))
        decls = [d.get("name") for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
        w = WRITE.search(user)
        if "write_file" in decls and w and not done:
            parts = [{"functionCall": {"name": "write_file",
                                       "args": {"file_path": w.group(1), "content": w.group(2).strip()}}}]
        elif stream:
            parts = [{"text": f"Wrote {w.group(1)}." if (w and done) else "Hello."}]
        else:  # side requests (next-speaker checks, routing) want JSON text
            parts = [{"text": json.dumps({"next_speaker": "user", "reasoning": "done", "model_choice": "flash"})}]
        resp = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 5, "totalTokenCount": 55,
                                  "cachedContentTokenCount": 20}, "modelVersion": "mock"}
        if stream:
            self.sse(["data: " + json.dumps(resp) + "\r\n\r\n"])
        else:
            self.send_json(resp)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
