import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  ChatMLChatWrapper,
  getLlama,
  GgmlType,
  GgufFileType,
  JinjaTemplateChatWrapper,
  LlamaChatSession,
  readGgufFileInfo,
  type Llama,
} from "node-llama-cpp";

import { describeSummary, runTinyModelCommand } from "../cli/commands/tiny-model.ts";
import { UsageError } from "../cli/options.ts";
import {
  InvalidTinyModelOptionError,
  tinyModelDefaults,
  writeTinyModel,
  type TinyModelOptions,
} from "../worker/tiny-model/index.ts";
import { encodeQ4_0, encodeQ8_0, toFloat16Bits } from "../worker/tiny-model/quantize.ts";

const printableReply = /^[\x20-\x7e\n]*$/;

let directory: string;
let llama: Llama;

before(async () => {
  directory = await mkdtemp(path.join(os.tmpdir(), "spillway-tiny-model-"));
  // With the library's default of 4 threads, a 24-token reply took 31 s instead of 70 ms on a 2-core machine.
  llama = await getLlama({ gpu: false, maxThreads: 1 });
});

after(async () => {
  await llama.dispose();
  await rm(directory, { recursive: true, force: true });
});

async function makeModel(fileName: string, options: Partial<Omit<TinyModelOptions, "outPath">> = {}): Promise<string> {
  const outPath = path.join(directory, fileName);
  await writeTinyModel({ ...tinyModelDefaults, ...options, outPath });
  return outPath;
}

interface Reply {
  text: string;
  stopReason: string;
  chatWrapper: unknown;
}

/**
 * Generates a greedy reply. The ChatML wrapper is passed in unless `resolveChatWrapper` is
 * set, because resolving it from the model's template takes a few hundred milliseconds.
 */
async function generateReply(modelPath: string, prompt: string, maxTokens: number, resolveChatWrapper = false): Promise<Reply> {
  const model = await llama.loadModel({ modelPath });
  try {
    // The session's default system prompt is 229 tokens in this byte-level vocabulary, so 256 is too small.
    const context = await model.createContext({ contextSize: 512, threads: 1 });
    const chatWrapper = resolveChatWrapper ? "auto" : new ChatMLChatWrapper();
    const session = new LlamaChatSession({ contextSequence: context.getSequence(), chatWrapper });
    const result = await session.promptWithMeta(prompt, { maxTokens, temperature: 0 });
    return { text: result.responseText, stopReason: result.stopReason, chatWrapper: session.chatWrapper };
  } finally {
    await model.dispose();
  }
}

describe("quantize", () => {
  test("f16 rounds to nearest even", () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff],
      [65520, 0x7c00],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [-0, 0x8000],
      [Number.NaN, 0x7e00],
    ];
    for (const [value, expected] of cases) {
      assert.equal(toFloat16Bits(value), expected, `f16 bits of ${value}`);
    }
  });

  test("q8_0 block layout", () => {
    const values = Float32Array.from({ length: 32 }, (_, j) => j * 4 - 62.5);
    values[0] = -127;
    const bytes = encodeQ8_0(values);
    const view = new DataView(bytes.buffer);

    assert.equal(bytes.length, 34);
    assert.equal(view.getUint16(0, true), toFloat16Bits(1));
    assert.equal(view.getInt8(2), -127);
    assert.equal(view.getInt8(3), -59, "-58.5 rounds away from zero");
    assert.equal(view.getInt8(33), 62, "61.5 rounds away from zero");
  });

  test("q4_0 block layout", () => {
    const values = new Float32Array(64);
    values[0] = 8;
    values[16] = -7;
    values[15] = 4;
    values[32] = -2;
    const bytes = encodeQ4_0(values);
    const view = new DataView(bytes.buffer);

    assert.equal(bytes.length, 36);
    assert.equal(view.getUint16(0, true), toFloat16Bits(-1), "scale is max / -8");
    assert.equal(bytes[2], 0x0 | (0xf << 4), "element 0 low nibble, element 16 high nibble");
    assert.equal(bytes[2 + 15], 0x4 | (0x8 << 4), "element 15 low nibble, element 31 high nibble");
    assert.equal(view.getUint16(18, true), toFloat16Bits(0.25), "second block scale");
    assert.equal(bytes[20], 0x0 | (0x8 << 4), "second block element 0 maps to quant 0");
  });
});

describe("writeTinyModel", () => {
  test("same seed gives identical files", async () => {
    const first = await readFile(await makeModel("seed-a.gguf"));
    const second = await readFile(await makeModel("seed-b.gguf"));
    assert.ok(first.equals(second));
  });

  test("different seeds give different files", async () => {
    const first = await readFile(await makeModel("seed-1.gguf", { seed: 1 }));
    const second = await readFile(await makeModel("seed-2.gguf", { seed: 2 }));
    assert.equal(first.length, second.length);
    assert.ok(!first.equals(second));
  });

  test("metadata matches options", async () => {
    const outPath = path.join(directory, "metadata.gguf");
    const options = { outPath, quant: "q4_0", layers: 3, embedding: 96, seed: 7, eosWeight: 1, contextLength: 2048 } as const;
    const summary = await writeTinyModel(options);
    const info = await readGgufFileInfo(outPath);
    const { general, llama: architecture, tokenizer } = info.metadata as unknown as TinyModelMetadata;

    assert.equal(general.architecture, "llama");
    assert.equal(general.file_type, GgufFileType.MOSTLY_Q4_0);
    assert.equal(architecture.block_count, 3);
    assert.equal(architecture.embedding_length, 96);
    assert.equal(architecture.context_length, 2048);
    assert.equal(architecture.attention.head_count, 3);
    assert.equal(architecture.feed_forward_length, summary.feedForwardLength);
    assert.equal(tokenizer.ggml.tokens.length, summary.vocabularySize);
    assert.equal(tokenizer.ggml.tokens[tokenizer.ggml.eos_token_id], "<|im_end|>");
    assert.equal(tokenizer.ggml.add_bos_token, false);
    assert.equal(info.tensorCount, 3 + 9 * 3);
    assert.equal(summary.bytes, (await stat(outPath)).size);

    const norms = info.tensorInfo?.filter((tensor) => tensor.name.endsWith("norm.weight")) ?? [];
    const weights = info.tensorInfo?.filter((tensor) => !tensor.name.endsWith("norm.weight")) ?? [];
    assert.ok(norms.every((tensor) => tensor.ggmlType === GgmlType.F32), "norms are f32");
    assert.ok(weights.every((tensor) => tensor.ggmlType === GgmlType.Q4_0), "weights are q4_0");
    const parameters = info.tensorInfo?.reduce((sum, tensor) => sum + tensor.dimensions.reduce<number>((a, b) => a * Number(b), 1), 0);
    assert.equal(parameters, summary.parameters);
  });

  test("rejects embedding off the block size", async () => {
    await assert.rejects(writeTinyModel({ ...tinyModelDefaults, outPath: path.join(directory, "bad.gguf"), embedding: 48 }), (error) => {
      assert.ok(error instanceof InvalidTinyModelOptionError);
      assert.equal(error.option, "embedding");
      assert.match(error.message, /multiple of 32/);
      return true;
    });
  });
});

interface TinyModelMetadata {
  general: { architecture: string; file_type: GgufFileType };
  llama: {
    block_count: number;
    embedding_length: number;
    context_length: number;
    feed_forward_length: number;
    attention: { head_count: number };
  };
  tokenizer: { ggml: { tokens: string[]; eos_token_id: number; add_bos_token: boolean }; chat_template: string };
}

describe("tiny model inference", () => {
  for (const quant of ["f16", "q8_0", "q4_0"] as const) {
    test(`${quant} replies in printable ASCII`, async () => {
      const modelPath = await makeModel(`printable-${quant}.gguf`, { quant, eosWeight: -10 });
      const reply = await generateReply(modelPath, "Write a quest", 48);
      assert.equal(reply.stopReason, "maxTokens");
      assert.ok(reply.text.length > 0, "reply is not empty");
      assert.match(reply.text, printableReply);
    });
  }

  test("same seed gives same greedy reply", async () => {
    const first = await generateReply(await makeModel("greedy-a.gguf", { eosWeight: -10 }), "Write a quest", 24);
    const second = await generateReply(await makeModel("greedy-b.gguf", { eosWeight: -10 }), "Write a quest", 24);
    assert.equal(first.stopReason, "maxTokens");
    assert.equal(first.text, second.text);
  });

  test("different seeds give different replies", async () => {
    const first = await generateReply(await makeModel("greedy-1.gguf", { seed: 1, eosWeight: -10 }), "hi", 16);
    const second = await generateReply(await makeModel("greedy-2.gguf", { seed: 2, eosWeight: -10 }), "hi", 16);
    assert.notEqual(first.text, second.text);
  });

  test("default reply ends by itself", async () => {
    const reply = await generateReply(await makeModel("defaults.gguf"), "hi", 200);
    assert.equal(reply.stopReason, "eogToken");
    assert.ok(reply.text.length > 0, "reply is not empty");
    assert.match(reply.text, printableReply);
  });

  test("chat wrapper resolves to ChatML", async () => {
    const reply = await generateReply(await makeModel("chat.gguf"), "hi", 4, true);
    assert.ok(reply.chatWrapper instanceof ChatMLChatWrapper);
  });

  test("chat template renders ChatML", async () => {
    const info = await readGgufFileInfo(await makeModel("template.gguf"));
    const template = info.metadata.tokenizer?.chat_template;
    assert.equal(typeof template, "string");

    const wrapper = new JinjaTemplateChatWrapper({ template: template ?? "" });
    const { contextText } = wrapper.generateContextState({
      chatHistory: [
        { type: "system", text: "Be brief." },
        { type: "user", text: "hi" },
        { type: "model", response: [] },
      ],
    });
    const expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
    assert.equal(contextText.toString(), expected);
  });
});

describe("tiny-model command", () => {
  test("writes file and prints summary", async (t) => {
    const write = t.mock.method(process.stdout, "write", () => true);
    const outPath = path.join(directory, "command.gguf");
    await runTinyModelCommand(["--out", outPath, "--quant", "f16", "--layers", "1", "--embedding", "32", "--seed", "3"]);
    write.mock.restore();

    const info = await readGgufFileInfo(outPath);
    assert.equal(info.metadata.general.file_type, GgufFileType.MOSTLY_F16);
    // The test runner's own output may pass through the mock too, so look for the summary line.
    const printed = write.mock.calls.map((call) => String(call.arguments[0])).filter((text) => text.startsWith("Wrote "));
    assert.equal(printed.length, 1);
    assert.match(printed[0] ?? "", /^Wrote .*command\.gguf: f16, [\d.]+ KiB, [\d,]+ parameters \(1 layers, embedding 32, 2 heads\)\n$/);
  });

  test("summary formats sizes", () => {
    const line = describeSummary({
      outPath: "/tmp/m.gguf",
      quant: "q8_0",
      bytes: 29_319_584,
      parameters: 27_561_472,
      layers: 8,
      embedding: 512,
      headCount: 16,
      feedForwardLength: 1536,
      vocabularySize: 283,
      contextLength: 4096,
    });
    assert.equal(line, "Wrote /tmp/m.gguf: q8_0, 28.0 MiB, 27,561,472 parameters (8 layers, embedding 512, 16 heads)");
  });

  test("bad options raise usage errors", async () => {
    const outPath = path.join(directory, "never.gguf");
    const cases: [string[], RegExp][] = [
      [[], /Missing --out/],
      [["--out", outPath, "--quant", "q5_k"], /--quant: 'q5_k'\. Expected one of f16, q8_0, q4_0\./],
      [["--out", outPath, "--layers", "0"], /--layers: '0'\. Expected a whole number from 1 to 32\./],
      [["--out", outPath, "--layers", "two"], /--layers: 'two'\. Expected a whole number/],
      [["--out", outPath, "--embedding", "48"], /--embedding: '48'\. Expected a multiple of 32 from 32 to 1024\./],
      [["--out", outPath, "--seed=-1"], /--seed: '-1'\. Expected a whole number from 0 to 4294967295\./],
      [["--out", outPath, "--eos-weight", "lots"], /--eos-weight: 'lots'\. Expected a number from -100 to 100\./],
      [["--out", outPath, "--context-length", "8"], /--context-length: '8'\. Expected a whole number from 32/],
      [["--out", path.join(directory, "missing", "x.gguf")], /--out: .* does not exist/],
      [["--out", outPath, "--colour"], /Unknown option '--colour'/],
    ];
    for (const [args, message] of cases) {
      await assert.rejects(runTinyModelCommand(args), (error) => {
        assert.ok(error instanceof UsageError, `${args.join(" ")} raises UsageError`);
        assert.equal(error.name, "UsageError");
        assert.match(error.message, message);
        return true;
      });
    }
    await assert.rejects(stat(outPath), { code: "ENOENT" });
  });
});
