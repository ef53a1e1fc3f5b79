console.log("vg test extension");
