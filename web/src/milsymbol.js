// milsymbol with only the letter-SIDC (MIL-STD-2525C) symbol sets the map draws: the full
// package default also registers 2525D/E and APP-6 number SIDCs, tripling the bundle. The
// package's "exports" map publishes only the full default, so the ES module entry is imported
// by path.
import { ms, std2525c } from "../node_modules/milsymbol/index.mjs";

ms.addIcons(std2525c);

export default ms;
