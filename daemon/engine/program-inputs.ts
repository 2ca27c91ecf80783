/**
 * A program's data inputs, declared once as data (name → dtype and shape) and used twice:
 * `declareInputs(g, decl)` makes them inputs of the graph, and `Feeds<typeof decl>` is the type of
 * what a run must feed. A missing or misspelt feed is then a compile error where the feeds are
 * built, not an onnxruntime error at run time far from its cause.
 *
 *   const dpoInputs = { ...LOGPROB_INPUTS, chosen_index: int64(['pairs']), beta: float32([]) } as const;
 *   const x = declareInputs(g, dpoInputs);          // x.chosen_index: Value
 *   const feeds: Feeds<typeof dpoInputs> = { ... };  // every name, and only those
 *
 * Inputs whose names the model decides (LoRA A/B per module, parameters and optimizer state, the
 * KV cache per layer) are not declared here: the code that names them feeds them.
 */
import { AligndError } from '../base/errors.js';
import { type Graph, type Shape, type Value, input } from './graph.js';
import { type OrtTensor, type Session, run } from './sessions.js';
import type { DType } from './tensor.js';

export interface InputDecl { readonly dtype: DType; readonly shape: readonly (number | string)[] }
export type InputDecls = Readonly<Record<string, InputDecl>>;
/** The declaration of a program fed nothing but what the engine names (the apply program). */
export type NoInputs = Record<never, never>;

export const int64 = (shape: Shape): InputDecl => ({ dtype: 'int64', shape });
export const float32 = (shape: Shape): InputDecl => ({ dtype: 'float32', shape });
export const floatInput = (dtype: 'float32' | 'float64', shape: Shape): InputDecl => ({ dtype, shape });

/** The graph values of declared inputs, by input name. */
export type Declared<I extends InputDecls> = { readonly [K in keyof I]: Value };

/** The feeds of a run: one tensor per declared input, by input name. */
export type Feeds<I extends InputDecls> = { readonly [K in keyof I]: OrtTensor };

/** Declare every input of `decl` on `g` (in the declaration's order). */
export function declareInputs<I extends InputDecls>(g: Graph, decl: I): Declared<I> {
  const out: Record<string, Value> = {};
  for (const [name, d] of Object.entries(decl)) out[name] = input(g, name, d.dtype, [...d.shape]);
  return out as Declared<I>;
}

/**
 * A program's declaration against its graph: every declared input is a graph input of the
 * declared dtype, and every graph input is declared or named by `undeclared` (parameters,
 * optimizer state, adapter tensors). A program that declares an input another way fails here, at
 * build time.
 */
export function checkDeclared(g: Graph, decl: InputDecls, undeclared: (name: string) => boolean): void {
  const bad = (what: string): never => {
    throw new AligndError('ENGINE_INVALID_GRAPH', `graph '${g.name}': ${what}`, { action: 'declare the program\'s data inputs with declareInputs from its declaration' });
  };
  for (const [name, d] of Object.entries(decl)) {
    if (!g.inputs.includes(name)) bad(`declared input '${name}' is not a graph input`);
    const dtype = g.values.get(name)?.dtype;
    if (dtype !== d.dtype) bad(`input '${name}' is ${dtype}, declared ${d.dtype}`);
  }
  for (const name of g.inputs) if (!(name in decl) && !undeclared(name)) bad(`graph input '${name}' is not in the program's declaration`);
}

/**
 * Feeds against a declaration at run time too: a wider object (a spread of another program's
 * feeds) type-checks but would feed an input the program does not have.
 */
export function checkFeeds(decl: InputDecls, feeds: Readonly<Record<string, OrtTensor>>, program: string): void {
  for (const name of Object.keys(decl)) {
    if (feeds[name] === undefined) throw new AligndError('INTERNAL', `${program}: no feed for declared input '${name}'`);
  }
  for (const name of Object.keys(feeds)) {
    if (!(name in decl)) throw new AligndError('INTERNAL', `${program}: feed '${name}' is not a declared input`);
  }
}

/** A session and the declaration of its program's data inputs. */
export interface Program<I extends InputDecls> { readonly session: Session; readonly inputs: I }

/**
 * Run a program on exactly its declared feeds; `named` carries the inputs whose names the model
 * decides (an adapter's LoRA tensors).
 */
export async function runProgram<I extends InputDecls>(p: Program<I>, feeds: NoInfer<Feeds<I>>, named: Readonly<Record<string, OrtTensor>> = {}): Promise<Record<string, OrtTensor>> {
  checkFeeds(p.inputs, feeds, 'program run');
  return run(p.session, { ...feeds, ...named });
}
