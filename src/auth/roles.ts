// Who may call what. Roles are ordered: a reader reads, an operator also
// drives the lifecycle and execs, an admin may do everything (define,
// delete, checkpoint, restore). Every method of the daemon's own services is
// listed; the services drivers bring declare their methods' roles
// (src/core/extension.ts). A method listed nowhere is denied, never
// silently allowed.

export type Role = 'reader' | 'operator' | 'admin';

export const ROLES: readonly Role[] = ['reader', 'operator', 'admin'];

const RANK: Record<Role, number> = { reader: 0, operator: 1, admin: 2 };

export function roleAtLeast(have: Role, need: Role): boolean {
  return RANK[have] >= RANK[need];
}

export function isRole(s: string): s is Role {
  return (ROLES as readonly string[]).includes(s);
}

const C = '/osvirt.v1.ContainerService/';

/** Full gRPC method path -> the least role allowed to call it. */
export const METHOD_ROLES: Record<string, Role> = {
  [`${C}GetContainer`]: 'reader',
  [`${C}ListContainers`]: 'reader',
  [`${C}GetContainerStats`]: 'reader',
  [`${C}ListCheckpoints`]: 'reader',
  '/osvirt.v1.EventService/WatchEvents': 'reader',
  '/osvirt.v1.SystemService/GetVersion': 'reader',
  '/osvirt.v1.SystemService/ListDrivers': 'reader',
  '/osvirt.v1.ImageService/ListImages': 'reader',
  '/osvirt.v1.ImageService/GetImage': 'reader',
  '/osvirt.v1.ImageService/PullImage': 'admin',
  '/osvirt.v1.ImageService/RemoveImage': 'admin',
  '/osvirt.v1.ImageService/PruneImages': 'admin',
  '/osvirt.v1.ImageService/ImportImage': 'admin',
  '/osvirt.v1.ImageService/ExportImage': 'admin',
  '/osvirt.v1.ImageService/Login': 'admin',
  '/osvirt.v1.ImageService/Logout': 'admin',
  '/grpc.health.v1.Health/Check': 'reader',
  '/grpc.health.v1.Health/Watch': 'reader',
  '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo': 'reader',
  '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo': 'reader',
  [`${C}StartContainer`]: 'operator',
  [`${C}StopContainer`]: 'operator',
  [`${C}KillContainer`]: 'operator',
  [`${C}PauseContainer`]: 'operator',
  [`${C}ResumeContainer`]: 'operator',
  [`${C}ExecContainer`]: 'operator',
  [`${C}AttachConsole`]: 'operator',
  [`${C}CreateContainer`]: 'admin',
  [`${C}DeleteContainer`]: 'admin',
  [`${C}CheckpointContainer`]: 'admin',
  [`${C}RestoreContainer`]: 'admin',
  [`${C}DeleteCheckpoint`]: 'admin',
  [`${C}ExportCheckpoint`]: 'admin',
  [`${C}ImportCheckpoint`]: 'admin',
};

/** Methods that change something (by their least role): every call to one is audited. */
export function isMutating(role: Role | undefined): boolean {
  return role === 'operator' || role === 'admin';
}

/** Short method name for logs and grants: "StartContainer". */
export function shortMethod(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
