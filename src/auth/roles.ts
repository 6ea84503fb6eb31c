// Who may call what. Roles are ordered: a reader reads, an operator also
// drives the lifecycle and execs, an admin may do everything (define,
// delete, checkpoint, restore). Every method of every service is listed:
// a method missing here is denied, never silently allowed.

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
  '/osvirt.v1.TemplateService/ListTemplates': 'reader',
  '/osvirt.v1.TemplateService/BuildTemplate': 'admin',
  '/osvirt.v1.TemplateService/RemoveTemplate': 'admin',
  '/osvirt.v1.ImageService/ListImages': 'reader',
  '/osvirt.v1.ImageService/GetImage': 'reader',
  '/osvirt.v1.ImageService/PullImage': 'admin',
  '/osvirt.v1.ImageService/RemoveImage': 'admin',
  '/osvirt.v1.ImageService/PruneImages': 'admin',
  '/osvirt.v1.ImageService/ImportImage': 'admin',
  '/osvirt.v1.ImageService/ExportImage': 'admin',
  '/osvirt.v1.ImageService/Login': 'admin',
  '/osvirt.v1.ImageService/Logout': 'admin',
  '/osvirt.v1.JailService/ListJails': 'reader',
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
  '/osvirt.v1.JailService/ImportJailConf': 'admin',
  '/osvirt.v1.VServerService/ListVServerStats': 'reader',
  '/osvirt.v1.VServerService/ExportVServerConfig': 'reader',
  '/osvirt.v1.VServerService/ImportVServerConfig': 'admin',
};

/** Methods that change something: every call to one is audited. */
export function isMutating(method: string): boolean {
  const r = METHOD_ROLES[method];
  return r === 'operator' || r === 'admin';
}

/** Short method name for logs and grants: "StartContainer". */
export function shortMethod(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
