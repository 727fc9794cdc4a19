// The documented exit statuses of `typervisor` (HELP in args.ts), in one place.

export const EXIT_OK = 0;
export const EXIT_GUEST_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_CRASH = 3;
export const EXIT_HOST = 4;
