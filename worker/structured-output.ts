import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import type { ChatModelFunctions, GbnfJsonSchema, Llama, LlamaGrammar } from "node-llama-cpp";

import type { FunctionTool, ResponseFormat } from "../api/chat-request.ts";
import { ApiError, invalidRequest } from "../api/errors.ts";
import { toGrammarSchema } from "./json-schema.ts";

/** A grammar that constrains decoding, and the check the finished output must pass. */
export interface OutputConstraint {
  grammar: LlamaGrammar;
  /** Throws an `ApiError` when the text is not what the response format promised. */
  validate(text: string): void;
}

const cacheLimit = 64;

/**
 * Builds grammars and validators for `response_format` and for tool parameters. Compiled grammars are
 * cached by schema text, because game clients send the same few schemas over and over.
 */
export class StructuredOutputs {
  readonly #llama: Llama;
  readonly #ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true });
  readonly #cache = new Map<string, OutputConstraint>();

  constructor(llama: Llama) {
    this.#llama = llama;
    this.#ajv.addFormat("date", /^\d{4}-\d{2}-\d{2}$/);
    this.#ajv.addFormat("time", /^\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/);
    this.#ajv.addFormat("date-time", /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/);
  }

  async forResponseFormat(format: ResponseFormat): Promise<OutputConstraint | undefined> {
    if (format.type === "text") return undefined;
    const key = format.type === "json_object" ? "json_object" : JSON.stringify(format.schema);
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;

    const constraint = format.type === "json_object"
      ? await this.#jsonObject()
      : await this.#jsonSchema(format.name, format.schema);
    if (this.#cache.size >= cacheLimit) this.#cache.delete(this.#cache.keys().next().value as string);
    this.#cache.set(key, constraint);
    return constraint;
  }

  /** Converts tools into node-llama-cpp functions, rejecting parameter schemas decoding cannot enforce. */
  toFunctions(tools: readonly FunctionTool[]): ChatModelFunctions {
    const functions: Record<string, { description?: string; params?: GbnfJsonSchema }> = {};
    tools.forEach((tool, index) => {
      const param = `tools[${index}].function.parameters`;
      const { name, description, parameters } = tool.function;
      if (name in functions) {
        throw invalidRequest(`'tools[${index}].function.name' repeats '${name}'. Give each tool a unique name.`, `tools[${index}].function.name`);
      }
      const hasParameters = parameters !== undefined && Object.keys(parameters.properties ?? {}).length > 0;
      if (parameters !== undefined) this.#compileValidator(parameters, param);
      functions[name] = {
        ...(description === undefined ? {} : { description }),
        ...(hasParameters ? { params: toGrammarSchema(parameters, param) as GbnfJsonSchema } : {}),
      };
    });
    return functions;
  }

  async #jsonObject(): Promise<OutputConstraint> {
    const grammar = await this.#llama.getGrammarFor("json");
    return {
      grammar,
      validate(text) {
        const value = parseJson(text, "json_object");
        if (typeof value !== "object" || value === null || Array.isArray(value)) {
          throw invalidOutput("The model's output is JSON but not an object, as response_format json_object requires.");
        }
      },
    };
  }

  async #jsonSchema(name: string, schema: Record<string, unknown>): Promise<OutputConstraint> {
    const param = "response_format.json_schema.schema";
    const grammarSchema = toGrammarSchema(schema, param);
    const validator = this.#compileValidator(schema, param);
    let grammar: LlamaGrammar;
    try {
      // The schema's shape is only known at run time, so the library's literal-type inference is bypassed.
      const createGrammar = this.#llama.createGrammarForJsonSchema.bind(this.#llama) as (
        schema: GbnfJsonSchema,
      ) => Promise<LlamaGrammar>;
      const schemaGrammar = await createGrammar(grammarSchema as GbnfJsonSchema);
      grammar = await this.#llama.createGrammar({
        grammar: withoutIntegerExponent(schemaGrammar.grammar),
        stopGenerationTriggers: schemaGrammar.stopGenerationTriggers,
        trimWhitespaceSuffix: schemaGrammar.trimWhitespaceSuffix,
      });
    } catch (error) {
      throw invalidRequest(`'${param}' could not be turned into a grammar: ${errorMessage(error)}`, param);
    }
    return {
      grammar,
      validate(text) {
        const value = parseJson(text, `json_schema '${name}'`);
        if (!validator(value)) {
          const [first] = validator.errors ?? [];
          const where = first?.instancePath === "" || first === undefined ? "the root" : first.instancePath;
          throw invalidOutput(
            `The model's output does not match response_format.json_schema '${name}': ${where} ${first?.message ?? "is invalid"}.`,
          );
        }
      },
    };
  }

  #compileValidator(schema: Record<string, unknown>, param: string): ValidateFunction {
    try {
      return this.#ajv.compile(withoutSchemaId(schema));
    } catch (error) {
      throw invalidRequest(`'${param}' is not a valid JSON schema: ${errorMessage(error)}`, param);
    }
  }
}

/**
 * node-llama-cpp 3.21's integer rule allows an exponent, so `{"type": "integer"}` can decode to
 * `6382e7886061202`, which is not an integer once parsed. The rule is rewritten to plain digits.
 */
export function withoutIntegerExponent(grammar: string): string {
  return grammar.replace(/^(integer-number-rule ::= .*?) \(\[eE\].*\)\?$/m, "$1");
}

/** Drops `$id` and `$schema`, so a client's own ids never collide in the shared ajv instance. */
function withoutSchemaId(schema: Record<string, unknown>): Record<string, unknown> {
  const { $id: _id, $schema: _schema, ...rest } = schema;
  return rest;
}

function parseJson(text: string, format: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw invalidOutput(`The model's output is not valid JSON, as response_format ${format} requires.`);
  }
}

/** Creates a 500, which SDKs retry: sampling again usually yields valid output, and nothing invalid reaches the client. */
function invalidOutput(message: string): ApiError {
  return new ApiError(500, `${message} Retry the request.`, { type: "server_error", code: "invalid_model_output" });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
