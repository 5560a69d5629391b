import { container as root, inject, injectable } from 'tsyringe';
import { coreTokens, createToken, type Token, type TokenType } from './tokens';
import type { PluginRegistrar, SinkContext } from './api';

interface Greeter {
  greet(name: string): string;
}
const greeterToken = createToken<Greeter>('test.tokens.greeter');

@injectable()
class Polite {
  constructor(@inject(greeterToken) private readonly greeter: Greeter) {}
  hello(): string {
    return this.greeter.greet('Ada');
  }
}

describe('typed DI tokens', () => {
  it('are symbols of their name (Symbol.for: the same token in every copy of @ferry/core)', () => {
    expect(typeof greeterToken).toBe('symbol');
    expect(greeterToken).toBe(Symbol.for('test.tokens.greeter'));
    expect(coreTokens.SinkContext).toBe(Symbol.for('ferry.SinkContext'));
  });

  it('resolve to their type without a cast', () => {
    const c = root.createChildContainer();
    c.register(greeterToken, { useValue: { greet: (n: string) => `hello ${n}` } });
    const g = c.resolve(greeterToken);
    // typed: g.greet exists and returns a string (a cast would be needed without the typed overloads)
    const text: string = g.greet('Grace');
    expect(text).toBe('hello Grace');
    // @ts-expect-error a Greeter has no `shout`
    expect(g.shout).toBeUndefined();
    c.register(greeterToken, { useFactory: () => ({ greet: () => 'hi' }) });
    expect(c.resolveAll(greeterToken).map((x) => x.greet('x'))).toEqual(['hello x', 'hi']);
  });

  it('work with @inject in constructors', () => {
    const c = root.createChildContainer();
    c.register(greeterToken, { useValue: { greet: (n: string) => `hi ${n}` } });
    expect(c.resolve(Polite).hello()).toBe('hi Ada');
  });

  it('carry their type (TokenType)', () => {
    const sink: TokenType<typeof coreTokens.SinkContext> = {
      id: 'x',
      config: {},
      logger: { error() {}, warn() {}, info() {}, debug() {}, child: () => sink.logger },
    };
    const same: SinkContext = sink;
    expect(same.id).toBe('x');
    const t: Token<number> = createToken<number>('test.tokens.n');
    // @ts-expect-error a Token<number> is not a Token<string>
    const u: Token<string> = t;
    expect(u).toBe(t);
  });
});

describe('reg.provide', () => {
  it('refuses a factory of another type than its token (compile time)', () => {
    const provided: symbol[] = [];
    const reg: Pick<PluginRegistrar, 'provide'> = { provide: (token) => void provided.push(token) };
    reg.provide(greeterToken, () => ({ greet: () => 'hi' }));
    // @ts-expect-error a number is not a Greeter
    reg.provide(greeterToken, () => 42);
    expect(provided).toHaveLength(2);
  });
});
