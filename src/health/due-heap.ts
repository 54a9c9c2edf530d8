/**
 * A binary min-heap of (due time, key, seq): when each target's next check
 * is due. Rescheduling pushes a new item and leaves the old one in place;
 * the scheduler drops items whose seq is no longer the target's (lazy
 * deletion keeps every operation O(log n)).
 */
export interface DueItem {
  due: number;
  key: string;
  seq: number;
}

export class DueHeap {
  private readonly items: DueItem[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): DueItem | undefined {
    return this.items[0];
  }

  push(item: DueItem): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.due <= item.due) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = item;
  }

  pop(): DueItem | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (top === undefined || last === undefined || a.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      const child = r < a.length && a[r]!.due < a[l]!.due ? r : l;
      if (a[child]!.due >= last.due) break;
      a[i] = a[child]!;
      i = child;
    }
    a[i] = last;
    return top;
  }

  clear(): void {
    this.items.length = 0;
  }
}
