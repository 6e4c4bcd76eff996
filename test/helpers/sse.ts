/** Server-Sent Events read from a whole response body: [{ event, data }] in order. */
export interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

export function parseSse(text: string): SseEvent[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      return { event, data: JSON.parse(data) as Record<string, unknown> };
    });
}

/** The token ids of a generation stream. */
export const streamTokens = (events: SseEvent[]): number[] => events.filter((e) => e.event === 'token').map((e) => e.data.token as number);

/** The `data` of the stream's one event of this kind (throws when absent). */
export function only(events: SseEvent[], event: string): Record<string, unknown> {
  const found = events.filter((e) => e.event === event);
  if (found.length !== 1) throw new Error(`expected one '${event}' event, received ${found.length}: ${JSON.stringify(events.slice(-3))}`);
  return found[0].data;
}
