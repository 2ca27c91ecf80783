/** The folder of a stage of daemon/layers.ts: `daemon/<stage>`, `adapters/<kind>`, or `daemon` for the composition root. */
export const stageDir = (stage: string): string => (stage === 'main' ? 'daemon' : stage.startsWith('adapters/') ? stage : `daemon/${stage}`);
