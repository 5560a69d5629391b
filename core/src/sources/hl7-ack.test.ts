import { buildAck } from './hl7-ack';

describe('buildAck', () => {
  it('swaps sender and receiver, keeps version, control id and trigger; custom delimiters', () => {
    const msg = Buffer.from('MSH#$~\\&#LAB#NORTH#EHR#MAIN#20261129##ORU$R01$ORU_R01#C-77#T#2.3\rPID#1\r');
    const ack = buildAck(msg, 'AR', 'bad # thing', new Date(Date.UTC(2026, 10, 29, 8, 5, 9)))!;
    const [msh, msa] = ack.split('\r');
    expect(msh).toMatch(/^MSH#\$~\\&#EHR#MAIN#LAB#NORTH#20261129080509\+0000##ACK\$R01\$ACK#\w{20}#T#2\.3$/);
    expect(msa).toBe('MSA#AR#C-77#bad   thing');
  });

  it('undefined without an MSH', () => {
    expect(buildAck(Buffer.from('PID|1\r'), 'AA')).toBeUndefined();
  });
});
