import type { MessageStore } from '../../store/message-store';

/**
 * The real store, every call made on it, except the methods in `over` (which may call the real
 * ones: `store.method(...)`): how the dispatcher's tests record what is asked of the store, or make
 * one answer fail, without mocks.
 */
export function storeWith(store: MessageStore, over: Partial<MessageStore>): MessageStore {
  return new Proxy(store, {
    get: (target, prop) => {
      if (Object.prototype.hasOwnProperty.call(over, prop)) return over[prop as keyof MessageStore];
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
