// The Pod Security Standards' `restricted` profile (which includes `baseline`), as the API
// server's PodSecurity admission evaluates it at version v1.32 (k8s.io/pod-security-admission,
// policy/check_*.go). Each check returns the fields that fail it; an empty list admits the Pod.
// Stands in for a real API server's PodSecurity plugin: the checks and their allowed values are
// transcribed from the Pod Security Standards page for v1.32.
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const BASELINE_CAPABILITIES = new Set(['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE',
  'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT']);
const SAFE_SYSCTLS = new Set(['kernel.shm_rmid_forced', 'net.ipv4.ip_local_port_range', 'net.ipv4.ip_unprivileged_port_start', 'net.ipv4.tcp_syncookies',
  'net.ipv4.ping_group_range', 'net.ipv4.ip_local_reserved_ports', 'net.ipv4.tcp_keepalive_time', 'net.ipv4.tcp_fin_timeout',
  'net.ipv4.tcp_keepalive_intvl', 'net.ipv4.tcp_keepalive_probes']);
const RESTRICTED_VOLUMES = ['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret'];

function containers(spec: Json): { path: string; c: Json }[] {
  return ['initContainers', 'containers', 'ephemeralContainers']
    .flatMap((list) => (spec[list] ?? []).map((c: Json, i: number) => ({ path: `spec.${list}[${i}]`, c })));
}

/** Every failing field of `pod` under `restricted`, as "<check>: <field>". */
export function restrictedViolations(pod: Json): string[] {
  const spec = pod.spec ?? {};
  const psc = spec.securityContext ?? {};
  const out: string[] = [];
  const fail = (check: string, field: string) => out.push(`${check}: ${field}`);
  const all = containers(spec);
  // baseline
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) if (spec[k] === true) fail('hostNamespaces', `spec.${k}`);
  if (psc.windowsOptions?.hostProcess === true) fail('hostProcess', 'spec.securityContext.windowsOptions.hostProcess');
  for (const v of spec.volumes ?? []) if (v.hostPath) fail('hostPathVolumes', `spec.volumes[${v.name}]`);
  for (const s of psc.sysctls ?? []) if (!SAFE_SYSCTLS.has(s.name)) fail('sysctls', `spec.securityContext.sysctls[${s.name}]`);
  for (const [field, sc] of [['spec.securityContext', psc], ...all.map(({ path, c }) => [`${path}.securityContext`, c.securityContext ?? {}])] as [string, Json][]) {
    if (sc.seccompProfile?.type === 'Unconfined') fail('seccompProfile_baseline', `${field}.seccompProfile.type`);
    if (sc.appArmorProfile?.type === 'Unconfined') fail('appArmorProfile', `${field}.appArmorProfile.type`);
    const se = sc.seLinuxOptions;
    if (se && ((se.type && !['container_t', 'container_init_t', 'container_kvm_t', 'container_engine_t'].includes(se.type)) || se.user || se.role)) fail('seLinuxOptions', `${field}.seLinuxOptions`);
  }
  for (const [k, v] of Object.entries(pod.metadata?.annotations ?? {})) {
    if (k.startsWith('container.apparmor.security.beta.kubernetes.io/') && v !== 'runtime/default' && !String(v).startsWith('localhost/')) fail('appArmorProfile', `metadata.annotations[${k}]`);
  }
  for (const { path, c } of all) {
    const sc = c.securityContext ?? {};
    if (sc.privileged === true) fail('privileged', `${path}.securityContext.privileged`);
    if (sc.windowsOptions?.hostProcess === true) fail('hostProcess', `${path}.securityContext.windowsOptions.hostProcess`);
    if (sc.procMount !== undefined && sc.procMount !== 'Default') fail('procMount', `${path}.securityContext.procMount`);
    for (const p of c.ports ?? []) if (p.hostPort) fail('hostPorts', `${path}.ports[${p.containerPort}].hostPort`);
    for (const cap of sc.capabilities?.add ?? []) if (!BASELINE_CAPABILITIES.has(cap)) fail('capabilities_baseline', `${path}.securityContext.capabilities.add[${cap}]`);
  }
  // restricted
  for (const v of spec.volumes ?? []) {
    const types = Object.keys(v).filter((k) => k !== 'name');
    if (!types.every((t) => RESTRICTED_VOLUMES.includes(t))) fail('restrictedVolumes', `spec.volumes[${v.name}]`);
  }
  if (psc.runAsUser === 0) fail('runAsUser', 'spec.securityContext.runAsUser');
  for (const { path, c } of all) {
    const sc = c.securityContext ?? {};
    if (sc.allowPrivilegeEscalation !== false) fail('allowPrivilegeEscalation', `${path}.securityContext.allowPrivilegeEscalation`);
    const nonRoot = sc.runAsNonRoot ?? psc.runAsNonRoot;
    if (nonRoot !== true) fail('runAsNonRoot', `${path}.securityContext.runAsNonRoot`);
    if (sc.runAsUser === 0) fail('runAsUser', `${path}.securityContext.runAsUser`);
    const seccomp = sc.seccompProfile?.type ?? psc.seccompProfile?.type;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') fail('seccompProfile_restricted', `${path}.securityContext.seccompProfile.type`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) fail('capabilities_restricted', `${path}.securityContext.capabilities.drop`);
    for (const cap of sc.capabilities?.add ?? []) if (cap !== 'NET_BIND_SERVICE') fail('capabilities_restricted', `${path}.securityContext.capabilities.add[${cap}]`);
  }
  return out;
}
